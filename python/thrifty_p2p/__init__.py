"""A dict over a thrifty-p2p ring.

``Dict`` is a ``collections.abc.MutableMapping`` whose items live on the ring;
the work is done by the Rust ``Client`` (``thrifty_p2p._native``): each key
goes straight to its owner, values larger than a chunk (8 MiB) travel as
chunks in parallel, and the GIL is released during every call.

>>> import thrifty_p2p
>>> d = thrifty_p2p.Dict("127.0.0.1:9900")   # or Dict(): the local ring, like the CLI
>>> d["a"] = b"apple"
>>> d["a"]
b'apple'
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator, KeysView, Mapping, MutableMapping
from typing import Any, NamedTuple, Optional, Union

from ._errors import BatchError, StoreError
from ._native import Ring

__all__ = ["BatchError", "Dict", "Info", "Lease", "Placement", "StoreError", "Ring"]

# Shown and pickled as thrifty_p2p.StoreError, where users import it from.
StoreError.__module__ = __name__
BatchError.__module__ = __name__

Key = Union[str, bytes]



class Info(NamedTuple):
    """What a key holds (``Dict.info``)."""

    #: The value's size in bytes.
    size: int
    #: Whether it is stored streamed, in parts (a large value).
    streamed: bool
    #: Bytes per part (every part but the last); a plain value: its size.
    part_bytes: int
    #: How many parts (a plain value: 1, or 0 when empty).
    parts: int
    #: The value's identity: it changes whenever the value is replaced.
    id: int
    #: The content type stored with the value (``Dict.put``), or None.
    content_type: Optional[str] = None
    #: The description stored with the value (``Dict.put``), or None.
    description: Optional[str] = None
    #: The bytes each replica stores when the nodes keep the value
    #: LZ4-compressed; None when it is stored as it is.
    stored_bytes: Optional[int] = None


class Placement(NamedTuple):
    """Where a value lives (``Dict.placement``), as ``"HOST:PORT"`` names."""

    #: The members holding the key, owner first.
    replicas: list[str]
    #: For a large (streamed) value, the members holding each part, in
    #: order; empty for a value stored whole.
    parts: list[list[str]]


class Lease:
    """A lease on a key (``Dict.lock``), with its fencing token.

    As a context manager it gives the token and unlocks on exit::

        with d.lock("job", ttl=10.0) as token:
            d.put("job", b"done", fence=token)

    or by hand: ``lease = d.lock(...)``; ``lease.token``; ``lease.unlock()``.
    The lease also ends by itself at ``expires_ms`` (wall-clock milliseconds
    since the epoch), and it survives the node that granted it.
    """

    def __init__(self, ring: Ring, key: Key, token: int, expires_ms: int) -> None:
        self._ring = ring
        #: The key the lease is on.
        self.key = key
        #: The fencing token: larger than every earlier lease's on the key.
        self.token = token
        #: When the lease expires by itself (ms since the epoch).
        self.expires_ms = expires_ms

    def unlock(self) -> None:
        """Gives the lease back at once (StoreError kind "StaleToken" if it was lost)."""
        self._ring.unlock(self.key, self.token)

    def renew(self, ttl: float) -> None:
        """Extends the lease to ``ttl`` seconds from now, keeping its token."""
        self.token, self.expires_ms = self._ring.renew(self.key, self.token, ttl)

    def __enter__(self) -> int:
        return self.token

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            self.unlock()
        except StoreError as lost:
            # A body that failed already says what went wrong; a lease lost
            # meanwhile (expired and taken) is raised only when it succeeded.
            if error is None or lost.kind != "StaleToken":
                raise

    def __repr__(self) -> str:
        return f"thrifty_p2p.Lease({self.key!r}, token={self.token}, expires_ms={self.expires_ms})"


_SERIALIZERS = (None, "bytes", "pickle")
# Keys per listing call.
_PAGE = 1000


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    raise TypeError(f"keys are str or bytes, not {type(key).__name__}")


def _decode(key: bytes) -> Key:
    """A listed key as str when it is UTF-8, else as bytes (either indexes the same item)."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


def _path(given: Union[str, "os.PathLike[str]", None], variable: str) -> Optional[str]:
    """A file option: as given, else from the environment ``variable``."""
    if given is None:
        return os.environ.get(variable) or None
    return os.fspath(given)


class Dict(MutableMapping):
    """The items stored on a thrifty-p2p ring, as a mutable mapping.

    ``peer`` is any member, ``"HOST:PORT"``; None finds the local ring as the
    command-line tools do (the first node answering on localhost from port
    9900 up). ``secret_file`` is a file holding the ring's client secret, for
    nodes started with ``--client-secret-file``; ``cluster_secret_file`` one
    holding the cluster secret (it opens every method); ``tls_cert``,
    ``tls_key`` and ``tls_ca`` (all three or none) connect over TLS to nodes
    started with ``--tls-*``. Each defaults to its environment variable, as
    for the CLI: ``THRIFTY_CLIENT_SECRET_FILE``,
    ``THRIFTY_CLUSTER_SECRET_FILE``, ``THRIFTY_TLS_CERT``, ``THRIFTY_TLS_KEY``,
    ``THRIFTY_TLS_CA``.

    Keys are ``str`` (stored as UTF-8) or ``bytes``; ``"a"`` and ``b"a"`` are
    the same key. With the default serializer (None or ``"bytes"``) values
    are any C-contiguous bytes-like object (bytes, bytearray, memoryview, a
    NumPy array), read in place without a copy, and come back as ``bytes``.
    With ``serializer="pickle"`` any picklable object is stored and comes
    back unpickled: only use it with a ring whose writers you trust.

    Listed keys (iteration, ``keys()``) come back as ``str`` when they are
    valid UTF-8, else as ``bytes``, in no overall order; ``len()`` lists the
    keys to count them.

    A Dict may be shared by threads: its calls are serialised on one
    connection set, with the GIL released while they wait. Failures raise
    ``StoreError``; a missing key raises ``KeyError``.
    """

    def __init__(
        self,
        peer: Optional[str] = None,
        *,
        serializer: Optional[str] = None,
        secret_file: Union[str, "os.PathLike[str]", None] = None,
        cluster_secret_file: Union[str, "os.PathLike[str]", None] = None,
        tls_cert: Union[str, "os.PathLike[str]", None] = None,
        tls_key: Union[str, "os.PathLike[str]", None] = None,
        tls_ca: Union[str, "os.PathLike[str]", None] = None,
    ) -> None:
        if serializer not in _SERIALIZERS:
            raise ValueError(f"serializer must be None, 'bytes' or 'pickle', not {serializer!r}")
        secret_file = _path(secret_file, "THRIFTY_CLIENT_SECRET_FILE")
        cluster_secret_file = _path(cluster_secret_file, "THRIFTY_CLUSTER_SECRET_FILE")
        tls = {
            "tls_cert": _path(tls_cert, "THRIFTY_TLS_CERT"),
            "tls_key": _path(tls_key, "THRIFTY_TLS_KEY"),
            "tls_ca": _path(tls_ca, "THRIFTY_TLS_CA"),
        }
        given = [name for name, path in tls.items() if path is not None]
        if given and len(given) < 3:
            missing = sorted(set(tls) - set(given))
            raise ValueError(f"TLS needs tls_cert, tls_key and tls_ca; {', '.join(missing)} missing")
        self._pickle = serializer == "pickle"
        self._ring = Ring(
            peer, secret_file, cluster_secret_file, tuple(tls.values()) if given else None
        )

    @property
    def entry(self) -> str:
        """The node this Dict entered the ring through, ``"HOST:PORT"``."""
        return self._ring.entry

    def __repr__(self) -> str:
        return f"thrifty_p2p.Dict({self.entry!r})"

    # The mapping.

    def __getitem__(self, key: Key) -> Any:
        value = self._ring.get(key)
        if value is None:
            raise KeyError(key)
        return pickle.loads(value) if self._pickle else value

    def get(self, key: Key, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` when it is not stored (one call)."""
        value = self._ring.get(key)
        if value is None:
            return default
        return pickle.loads(value) if self._pickle else value

    def __setitem__(self, key: Key, value: Any) -> None:
        if self._pickle:
            value = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self._ring.put(key, value)

    def put(
        self,
        key: Key,
        value: Any,
        *,
        create_only: bool = False,
        content_type: Optional[str] = None,
        description: Optional[str] = None,
        fence: Optional[int] = None,
    ) -> None:
        """``d[key] = value`` with options. ``create_only``: store only if
        ``key`` holds no value, else raise ``StoreError`` of kind
        ``"Exists"`` and change nothing (of concurrent create-only puts of
        a key, through any nodes, exactly one succeeds). ``content_type``
        (at most 256 bytes) and ``description`` (at most 1024) are stored
        with the value; ``info`` returns them, and a plain ``d[key] = ...``
        drops them. ``fence`` (a token from ``lock``): the write is refused
        (``StoreError`` of kind ``"StaleToken"``, nothing stored) unless that
        lease is the key's current one. A value with options must fit one
        message (8 MiB); without any, ``put`` is ``d[key] = value``."""
        if self._pickle:
            value = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if not create_only and content_type is None and description is None and fence is None:
            self._ring.put(key, value)
        else:
            self._ring.put_with(key, value, create_only, content_type, description, fence)

    def append(self, key: Key, value: Any) -> int:
        """Appends the bytes ``value`` to the value at ``key``, atomically at
        the key's owner (concurrent appends through any nodes each land
        once), and returns the value's new size; a missing key is created,
        and the value's metadata is kept. Raises ``StoreError`` of kind
        ``"Streamed"`` for a large (streamed) value and ``"TooLarge"`` past
        the nodes' ``--max-value-bytes``. Not for a ``serializer="pickle"``
        Dict (pickles do not concatenate): that raises ``TypeError``."""
        if self._pickle:
            raise TypeError("append needs bytes values: this Dict pickles them (serializer=\"pickle\"), and pickles do not concatenate")
        return self._ring.append(key, value)

    def lock(self, key: Key, ttl: float = 10.0, wait: Optional[float] = None) -> Lease:
        """Takes the lease on ``key`` for ``ttl`` seconds (up to a day) and
        returns it (a context manager giving its token). With ``wait`` None
        it fails at once with StoreError kind "Held" when another holder has
        it (the message says until when); else it retries for up to ``wait``
        seconds. Only writes fenced with the token (``put(..., fence=)``)
        are guarded by the lease."""
        token, expires_ms = self._ring.lock(key, ttl, wait)
        return Lease(self._ring, key, token, expires_ms)

    def __delitem__(self, key: Key) -> None:
        if not self._ring.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return self._ring.contains(key)

    # Batches.

    def get_many(self, keys: Iterable[Key]) -> dict:
        """The values of those ``keys`` that are stored, as ``{key: value}``
        (a key not stored is left out), read with one call per owner node.

        Each key is read as ``d[key]`` reads it; the batch is not a snapshot
        (a write landing meanwhile may be seen for one key, not another).
        When some keys could not be read, raises ``BatchError``: its
        ``errors`` maps each to its ``StoreError`` and its ``values`` holds
        what was read.
        """
        keys = list(keys)
        found: dict = {}
        errors: dict = {}
        for key, value in zip(keys, self._ring.get_many(keys)):
            if isinstance(value, StoreError):
                errors[key] = value
            elif value is not None:
                found[key] = pickle.loads(value) if self._pickle else value
        if errors:
            raise BatchError.of(errors, found, len(keys))
        return found

    def put_many(self, items: Union[Mapping[Key, Any], Iterable[tuple[Key, Any]]]) -> None:
        """Stores every item of ``items`` (a mapping, or ``(key, value)``
        pairs), with one call per owner node.

        Each item is stored as ``d[key] = value`` stores it, and stands
        alone: not atomic, so when some fail the others are still stored
        (and a reader may see some before others). Of two pairs for one key
        the later wins. When some items failed, raises ``BatchError``: its
        ``errors`` maps each failed key to its ``StoreError``.
        """
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        if self._pickle:
            pairs = [(k, pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)) for k, v in pairs]
        errors = {
            key: outcome
            for (key, _), outcome in zip(pairs, self._ring.put_many(pairs))
            if outcome is not None
        }
        if errors:
            raise BatchError.of(errors, {}, len(pairs))

    def __len__(self) -> int:
        """How many keys the whole ring holds: it lists them all, so it costs a scan."""
        return self._ring.count(b"")

    def __iter__(self) -> Iterator[Key]:
        return self._keys(b"")

    def keys(self, prefix: Optional[Key] = None) -> KeysView:  # type: ignore[override]
        """The ring's keys, or those starting with ``prefix``, as a view.

        Iterating pages through the ring (1000 keys a call), lazily; keys come
        as ``str`` when valid UTF-8, else ``bytes``, in no overall order. Keys
        written or deleted meanwhile may or may not be seen. ``len()`` of the
        view counts the keys with the prefix; ``in`` checks the prefix and
        asks the ring.
        """
        return _Keys(self, _key_bytes(prefix) if prefix is not None else b"")

    def _keys(self, prefix: bytes) -> Iterator[Key]:
        cursor: Optional[bytes] = None
        while True:
            keys, cursor = self._ring.list(prefix, cursor, _PAGE)
            for key in keys:
                yield _decode(key)
            if cursor is None:
                return

    # The ring.

    def owner(self, key: Key) -> Optional[str]:
        """The member owning ``key`` in the entry node's view (``"HOST:PORT"``), or None."""
        return self._ring.owner(key)

    def replicas(self, key: Key) -> list[str]:
        """The members holding ``key``, owner first (as many as the nodes' ``--replicas``)."""
        return self._ring.replicas(key)

    def info(self, key: Key) -> Optional[Info]:
        """What ``key`` holds (size, whether streamed, parts, identity,
        content type, description, stored size) without reading the
        value; None when nothing is stored."""
        found = self._ring.info(key)
        return None if found is None else Info(*found)

    def placement(self, key: Key) -> Optional[Placement]:
        """Where the value at ``key`` lives: the members holding the key,
        owner first, and for a large (streamed) value the members holding
        each of its parts; None when nothing is stored there."""
        found = self._ring.placement(key)
        return None if found is None else Placement(*found)

    def spread_keys(self, prefix: str, count: int) -> list[str]:
        """``count`` new keys, ``prefix`` + 16 hex digits, whose owners go
        round the members in order, so each member owns an even share (of
        the ring as it is now): a shuffle's partitions, say."""
        return self._ring.spread_keys(prefix, count)

    def members(self) -> list[str]:
        """The ring's members in the entry node's view."""
        return self._ring.members()

    def stats(self) -> dict[str, int]:
        """The entry node's counters (keys, bytes, requests, ``replicas``...)."""
        return self._ring.stats()


class _Keys(KeysView):
    """``Dict.keys(prefix)``: the keys starting with ``prefix``, listed when iterated."""

    def __init__(self, mapping: Dict, prefix: bytes) -> None:
        super().__init__(mapping)
        self._prefix = prefix

    def __iter__(self) -> Iterator[Key]:
        return self._mapping._keys(self._prefix)

    def __len__(self) -> int:
        return self._mapping._ring.count(self._prefix)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return _key_bytes(key).startswith(self._prefix) and key in self._mapping

    def __repr__(self) -> str:
        return f"{self._mapping!r}.keys(prefix={self._prefix!r})"
