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
from collections.abc import Iterator, KeysView, MutableMapping
from typing import Any, Optional, Union

from ._errors import StoreError
from ._native import Ring

__all__ = ["Dict", "StoreError", "Ring"]

# Shown and pickled as thrifty_p2p.StoreError, where users import it from.
StoreError.__module__ = __name__

Key = Union[str, bytes]

_SERIALIZERS = (None, "bytes", "pickle")
_NOT_YET = (
    "listing the ring's keys (len, iteration, keys()) needs Client::list and "
    "Client::count, which this build of thrifty_p2p does not have yet"
)


def _decode(key: bytes) -> Key:
    """A listed key as str when it is UTF-8, else as bytes (either indexes the same item)."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key


class Dict(MutableMapping):
    """The items stored on a thrifty-p2p ring, as a mutable mapping.

    ``peer`` is any member, ``"HOST:PORT"``; None finds the local ring as the
    command-line tools do (the first node answering on localhost from port
    9900 up). ``secret_file`` is a file holding the ring's client secret, for
    nodes started with ``--client-secret-file`` (default: the environment
    variable ``THRIFTY_CLIENT_SECRET_FILE``, as for the CLI).

    Keys are ``str`` (stored as UTF-8) or ``bytes``; ``"a"`` and ``b"a"`` are
    the same key. With the default serializer (None or ``"bytes"``) values
    are any C-contiguous bytes-like object (bytes, bytearray, memoryview, a
    NumPy array), read in place without a copy, and come back as ``bytes``.
    With ``serializer="pickle"`` any picklable object is stored and comes
    back unpickled: only use it with a ring whose writers you trust.

    Listed keys (iteration, ``keys()``) come back as ``str`` when they are
    valid UTF-8, else as ``bytes``.

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
    ) -> None:
        if serializer not in _SERIALIZERS:
            raise ValueError(f"serializer must be None, 'bytes' or 'pickle', not {serializer!r}")
        if secret_file is None:
            secret_file = os.environ.get("THRIFTY_CLIENT_SECRET_FILE") or None
        self._pickle = serializer == "pickle"
        self._ring = Ring(peer, os.fspath(secret_file) if secret_file is not None else None)

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

    def __delitem__(self, key: Key) -> None:
        if not self._ring.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return self._ring.contains(key)

    def __len__(self) -> int:
        raise NotImplementedError(_NOT_YET)

    def __iter__(self) -> Iterator[Key]:
        raise NotImplementedError(_NOT_YET)

    def keys(self, prefix: Optional[Key] = None) -> KeysView:  # type: ignore[override]
        """The ring's keys, or those starting with ``prefix``, as a view."""
        raise NotImplementedError(_NOT_YET)

    # The ring.

    def owner(self, key: Key) -> Optional[str]:
        """The member owning ``key`` in the entry node's view (``"HOST:PORT"``), or None."""
        return self._ring.owner(key)

    def replicas(self, key: Key) -> list[str]:
        """The members holding ``key``, owner first (as many as the nodes' ``--replicas``)."""
        return self._ring.replicas(key)

    def members(self) -> list[str]:
        """The ring's members in the entry node's view."""
        return self._ring.members()

    def stats(self) -> dict[str, int]:
        """The entry node's counters (keys, bytes, requests, ``replicas``...)."""
        return self._ring.stats()
