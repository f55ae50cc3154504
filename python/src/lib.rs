//! `thrifty_p2p._native`: the Rust half of the Python package, one class,
//! `Ring`, over the root crate's [`Client`]. `thrifty_p2p.Dict` (Python, in
//! `thrifty_p2p/__init__.py`) builds the mapping on it; this file only
//! converts arguments and errors and calls the client.
//!
//! Every call that touches the network releases the GIL (`Python::detach`)
//! before it takes the client's lock, so other Python threads run during a
//! transfer and two threads sharing a `Ring` wait for each other without
//! holding the GIL (taking the lock first would deadlock: the holder could
//! need the GIL back to return). The [`Client`] is not `Sync`, so a mutex
//! serialises the calls; a thread that wants parallel calls opens its own
//! `Ring`.
//!
//! Values are read in place through the buffer protocol (bytes, bytearray,
//! memoryview, a NumPy array, anything C-contiguous): no copy is made on the
//! way in. The caller must not change the object while it is being stored,
//! as with any nogil NumPy operation. Values come back as `bytes` (one copy,
//! from the client's buffer into the bytes object).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use parking_lot::Mutex;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use thrifty_p2p::listing::KeyPage;
use thrifty_p2p::{Client, ClientOptions, Error, Meta, NodeAddr, WriteOptions};

/// `thrifty_p2p.StoreError`, defined in Python (`thrifty_p2p/_errors.py`) so
/// its constructor and attributes read as Python; looked up once.
static STORE_ERROR: OnceLock<Py<PyAny>> = OnceLock::new();

/// The Python exception for a library error: `StoreError(message, kind,
/// transient)`, the message being the error's Display (it says what to do).
fn store_error(py: Python<'_>, error: Error) -> PyErr {
    let class = match STORE_ERROR.get() {
        Some(class) => class.bind(py).clone(),
        None => match py
            .import("thrifty_p2p._errors")
            .and_then(|m| m.getattr("StoreError"))
        {
            Ok(class) => STORE_ERROR.get_or_init(|| class.unbind()).bind(py).clone(),
            Err(e) => return e,
        },
    };
    let kind = format!("{:?}", error.kind());
    match class.call1((error.to_string(), kind, error.is_transient())) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// A key's bytes, borrowed: `str` (as UTF-8) or `bytes`, nothing else.
fn key_bytes<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes());
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    Err(PyTypeError::new_err(format!(
        "keys are str or bytes, not {}",
        key.get_type().name()?
    )))
}

/// A duration in seconds from Python; a negative, NaN or infinite one is a
/// ValueError naming `what` (0 reaches the node, which refuses it).
fn seconds(what: &str, value: f64) -> PyResult<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "{what} is a number of seconds, 0 or more and finite, not {value}"
        ))
    })
}

/// A value exported through the buffer protocol, held (and so kept alive
/// and unresizable) until dropped.
struct Value(PyUntypedBuffer);

impl Value {
    fn of(value: &Bound<'_, PyAny>) -> PyResult<Value> {
        let Ok(buffer) = PyUntypedBuffer::get(value) else {
            return Err(PyTypeError::new_err(format!(
                "values are bytes-like objects (bytes, bytearray, memoryview, a NumPy array), \
                 not {}; encode it first, or open the Dict with serializer=\"pickle\"",
                value.get_type().name()?
            )));
        };
        if !buffer.is_c_contiguous() {
            return Err(PyTypeError::new_err(
                "the value's buffer is not C-contiguous (a slice with steps, a transposed \
                 array...); store a contiguous copy (numpy.ascontiguousarray, bytes(...))",
            ));
        }
        Ok(Value(buffer))
    }

    /// The value's bytes, in place.
    fn bytes(&self) -> &[u8] {
        let (ptr, len) = (self.0.buf_ptr().cast::<u8>(), self.0.len_bytes());
        if ptr.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: a C-contiguous buffer is `len_bytes` bytes from `buf_ptr`,
        // exported to us until `self.0` is released (the exporter may not
        // free or resize it meanwhile); we only read it.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// A page of keys and the cursor for the next, as `Ring.list` returns them.
type Page<'py> = (Vec<Bound<'py, PyBytes>>, Option<Bound<'py, PyBytes>>);

/// A connection to a ring, shared by the threads that use it.
#[pyclass(module = "thrifty_p2p._native", frozen)]
struct Ring {
    client: Mutex<Client>,
    entry: String,
}

impl Ring {
    /// Runs `call` on the client with the GIL released.
    fn call<R: Send>(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&mut Client) -> thrifty_p2p::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| call(&mut self.client.lock()))
            .map_err(|e| store_error(py, e))
    }
}

/// `Ring.info`'s answer: size, streamed, part_bytes, parts, id,
/// content_type, description, stored_bytes.
type InfoTuple = (
    u64,
    bool,
    u64,
    u64,
    u64,
    Option<String>,
    Option<String>,
    Option<u64>,
);

/// `Ring.placement`'s answer: the key's holders, and each part's.
type PlacementTuple = (Vec<String>, Vec<Vec<String>>);

#[pymethods]
impl Ring {
    /// Connects to `peer`'s ring (`HOST:PORT`), or with None to the first
    /// node answering on localhost from port 9900 up; proves the cluster
    /// secret in `cluster_secret_file`, else the client secret in
    /// `secret_file`, when given; over TLS with `tls` (certificate, key,
    /// CA), as the command-line tools' options do.
    #[new]
    #[pyo3(signature = (peer=None, secret_file=None, cluster_secret_file=None, tls=None))]
    fn new(
        py: Python<'_>,
        peer: Option<&str>,
        secret_file: Option<PathBuf>,
        cluster_secret_file: Option<PathBuf>,
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
    ) -> PyResult<Ring> {
        let peer: Option<NodeAddr> = peer
            .map(str::parse)
            .transpose()
            .map_err(|e| store_error(py, e))?;
        let client = py
            .detach(|| {
                let tls = tls.as_ref();
                let options = ClientOptions::from_files(
                    secret_file.as_deref(),
                    cluster_secret_file.as_deref(),
                    tls.map(|(cert, key, ca)| (cert.as_path(), key.as_path(), ca.as_path())),
                )?;
                Client::open(peer, options)
            })
            .map_err(|e| store_error(py, e))?;
        Ok(Ring {
            entry: client.entry().to_string(),
            client: Mutex::new(client),
        })
    }

    /// The node this ring was entered through, `HOST:PORT`.
    #[getter]
    fn entry(&self) -> &str {
        &self.entry
    }

    /// The value at `key` as bytes, or None when it is not stored.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let key = key_bytes(key)?;
        let value = self.call(py, |c| c.get(key))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    /// Stores `value` (any C-contiguous buffer) at `key`; returns once a
    /// write quorum of its replicas holds it.
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = key_bytes(key)?;
        let value = Value::of(value)?;
        let bytes = value.bytes();
        self.call(py, |c| c.put(key, bytes))
    }

    /// The values at `keys` (a sequence of str/bytes), one per key in
    /// order: bytes, None when not stored, or the `StoreError` that key
    /// failed with (returned, not raised: the other keys were read).
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let keys = keys
            .iter()
            .map(key_bytes)
            .collect::<PyResult<Vec<&[u8]>>>()?;
        let outcomes = self.call(py, |c| Ok(c.get_many(&keys)))?;
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(Some(value)) => Ok(PyBytes::new(py, &value).into_any()),
                Ok(None) => Ok(py.None().into_bound(py)),
                Err(e) => Ok(store_error(py, e).into_value(py).into_bound(py).into_any()),
            })
            .collect()
    }

    /// Stores each `(key, value)` pair of `items` (values: any C-contiguous
    /// buffer, read in place); one outcome per item in order: None when it
    /// was stored, else the `StoreError` it failed with (returned, not
    /// raised: the other items were written).
    fn put_many<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let held = items
            .iter()
            .map(|(key, value)| Ok((key_bytes(key)?, Value::of(value)?)))
            .collect::<PyResult<Vec<(&[u8], Value)>>>()?;
        let pairs: Vec<(&[u8], &[u8])> = held.iter().map(|(k, v)| (*k, v.bytes())).collect();
        let outcomes = self.call(py, |c| Ok(c.put_many(&pairs)))?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(()) => py.None().into_bound(py),
                Err(e) => store_error(py, e).into_value(py).into_bound(py).into_any(),
            })
            .collect())
    }

    /// Stores `value` at `key` with options: create-only (a `StoreError`
    /// of kind "Exists" if the key holds a value, nothing changed), a
    /// content type and description stored with the value, and `fence`, a
    /// lease token (refused with kind "StaleToken" unless it is the key's
    /// current lease).
    #[pyo3(signature = (key, value, create_only=false, content_type=None, description=None, fence=None))]
    // The arguments are Python's keyword arguments, one each.
    #[allow(clippy::too_many_arguments)]
    fn put_with(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        create_only: bool,
        content_type: Option<String>,
        description: Option<String>,
        fence: Option<i64>,
    ) -> PyResult<()> {
        let key = key_bytes(key)?;
        let value = Value::of(value)?;
        let bytes = value.bytes();
        let options = WriteOptions {
            create_only,
            meta: Meta {
                content_type,
                description,
            },
            fence,
        };
        self.call(py, |c| c.put_with(key, bytes, &options))
    }

    /// Appends `value` to the value at `key`, atomically at its owner;
    /// returns the value's new size.
    fn append(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let key = key_bytes(key)?;
        let value = Value::of(value)?;
        let bytes = value.bytes();
        self.call(py, |c| c.append(key, bytes))
    }

    /// Takes the lease on `key` for `ttl` seconds: (token, expires_ms).
    /// With `wait` None fails at once (kind "Held") when another holder
    /// has it; else retries for up to `wait` seconds.
    #[pyo3(signature = (key, ttl, wait=None))]
    fn lock(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        ttl: f64,
        wait: Option<f64>,
    ) -> PyResult<(i64, i64)> {
        let key = key_bytes(key)?;
        let ttl = seconds("ttl", ttl)?;
        let wait = wait.map(|w| seconds("wait", w)).transpose()?;
        let lease = self.call(py, |c| c.lock(key, ttl, wait))?;
        Ok((lease.token, lease.expires_ms))
    }

    /// Gives the lease `token` on `key` back (kind "StaleToken" if it is
    /// not the current lease).
    fn unlock(&self, py: Python<'_>, key: &Bound<'_, PyAny>, token: i64) -> PyResult<()> {
        let key = key_bytes(key)?;
        self.call(py, |c| c.unlock(key, token))
    }

    /// Extends the lease `token` on `key` to `ttl` seconds from now:
    /// (token, expires_ms).
    fn renew(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        token: i64,
        ttl: f64,
    ) -> PyResult<(i64, i64)> {
        let key = key_bytes(key)?;
        let ttl = seconds("ttl", ttl)?;
        let lease = self.call(py, |c| c.renew(key, token, ttl))?;
        Ok((lease.token, lease.expires_ms))
    }

    /// Deletes `key` if it holds a value; returns whether it did (the
    /// check and the delete are two calls, made back to back under the
    /// ring's lock).
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_bytes(key)?;
        self.call(py, |c| {
            if !c.contains(key)? {
                return Ok(false);
            }
            c.delete(key).map(|()| true)
        })
    }

    /// Whether `key` holds a value.
    fn contains(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_bytes(key)?;
        self.call(py, |c| c.contains(key))
    }

    /// The member owning `key` (`HOST:PORT`) in the entry node's view, or
    /// None for an empty ring.
    fn owner(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let key = key_bytes(key)?;
        let owner = self.call(py, |c| c.owner(key))?;
        Ok(owner.map(|a| a.to_string()))
    }

    /// The members holding `key`, owner first.
    fn replicas(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let key = key_bytes(key)?;
        let replicas = self.call(py, |c| c.replicas(key))?;
        Ok(replicas.iter().map(ToString::to_string).collect())
    }

    /// What the key holds: (size, streamed, part_bytes, parts, id,
    /// content_type, description, stored_bytes), or None when nothing is
    /// stored.
    fn info(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<InfoTuple>> {
        let key = key_bytes(key)?;
        let info = self.call(py, |c| c.describe(key))?;
        Ok(info.exists.then(|| {
            let streamed = info.manifest.is_some();
            (
                info.size,
                streamed,
                info.part_bytes,
                info.parts,
                info.id,
                info.meta.content_type,
                info.meta.description,
                info.stored_bytes,
            )
        }))
    }

    /// Where the value at `key` lives: (holders of the key, holders of each
    /// part of a streamed value), or None when nothing is stored.
    fn placement(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<PlacementTuple>> {
        let key = key_bytes(key)?;
        let placement = self.call(py, |c| c.placement(key))?;
        let names =
            |addrs: &[thrifty_p2p::NodeAddr]| addrs.iter().map(ToString::to_string).collect();
        Ok(placement.map(|p| {
            (
                names(&p.replicas),
                p.parts.iter().map(|part| names(part)).collect(),
            )
        }))
    }

    /// `count` new keys `prefix` + 16 hex digits whose owners go round the
    /// members.
    fn spread_keys(&self, py: Python<'_>, prefix: &str, count: usize) -> PyResult<Vec<String>> {
        self.call(py, |c| c.spread_keys(prefix, count))
    }

    /// The ring's members in the entry node's view.
    fn members(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let members = self.call(py, Client::members)?;
        Ok(members.iter().map(ToString::to_string).collect())
    }

    /// The entry node's counters.
    fn stats(&self, py: Python<'_>) -> PyResult<BTreeMap<String, i64>> {
        self.call(py, Client::stats)
    }

    /// One page of at most `limit` keys starting with `prefix`, and the
    /// cursor for the next page (None: no more).
    #[pyo3(signature = (prefix, cursor=None, limit=1000))]
    fn list<'py>(
        &self,
        py: Python<'py>,
        prefix: &Bound<'py, PyAny>,
        cursor: Option<&Bound<'py, PyBytes>>,
        limit: u32,
    ) -> PyResult<Page<'py>> {
        let prefix = key_bytes(prefix)?;
        let cursor = cursor.map(|c| c.as_bytes());
        let KeyPage { keys, cursor } = self.call(py, |c| c.list(prefix, cursor, limit))?;
        let keys = keys.iter().map(|k| PyBytes::new(py, k)).collect();
        Ok((keys, cursor.map(|c| PyBytes::new(py, &c))))
    }

    /// How many keys start with `prefix` on the whole ring (it costs a
    /// listing).
    fn count(&self, py: Python<'_>, prefix: &Bound<'_, PyAny>) -> PyResult<u64> {
        let prefix = key_bytes(prefix)?;
        self.call(py, |c| c.count(prefix))
    }

    fn __repr__(&self) -> String {
        format!("Ring({:?})", self.entry)
    }
}

/// The module `thrifty_p2p._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Ring>()
}
