"""A dict over a thrifty-p2p ring (see __init__.py)."""

import os
from collections.abc import Iterable, Iterator, KeysView, Mapping, MutableMapping
from typing import Any, NamedTuple, Optional, Union, overload

from ._native import Ring as Ring

Key = Union[str, bytes]

class Info(NamedTuple):
    size: int
    streamed: bool
    part_bytes: int
    parts: int
    id: int
    content_type: Optional[str] = None
    description: Optional[str] = None
    stored_bytes: Optional[int] = None

class Placement(NamedTuple):
    replicas: list[str]
    parts: list[list[str]]

class StoreError(Exception):
    kind: str
    transient: bool
    def __init__(self, message: str, kind: str, transient: bool) -> None: ...

class BatchError(StoreError):
    errors: dict[Any, StoreError]
    values: dict[Any, Any]
    def __init__(
        self,
        message: str,
        kind: str,
        transient: bool,
        errors: Optional[dict[Any, StoreError]] = None,
        values: Optional[dict[Any, Any]] = None,
    ) -> None: ...
    @classmethod
    def of(
        cls, errors: dict[Any, StoreError], values: dict[Any, Any], total: int
    ) -> "BatchError": ...
class Lease:
    key: Key
    token: int
    expires_ms: int
    def __init__(self, ring: Ring, key: Key, token: int, expires_ms: int) -> None: ...
    def unlock(self) -> None: ...
    def renew(self, ttl: float) -> None: ...
    def __enter__(self) -> int: ...
    def __exit__(self, kind: object, error: object, traceback: object) -> None: ...

class Dict(MutableMapping[Key, Any]):
    def __init__(
        self,
        peer: Optional[str] = None,
        *,
        serializer: Optional[str] = None,
        secret_file: Union[str, os.PathLike[str], None] = None,
        cluster_secret_file: Union[str, os.PathLike[str], None] = None,
        tls_cert: Union[str, os.PathLike[str], None] = None,
        tls_key: Union[str, os.PathLike[str], None] = None,
        tls_ca: Union[str, os.PathLike[str], None] = None,
    ) -> None: ...
    @property
    def entry(self) -> str: ...
    def __getitem__(self, key: Key) -> Any: ...
    @overload
    def get(self, key: Key) -> Any: ...
    @overload
    def get(self, key: Key, default: Any) -> Any: ...
    def __setitem__(self, key: Key, value: Any) -> None: ...
    def put(
        self,
        key: Key,
        value: Any,
        *,
        create_only: bool = False,
        content_type: Optional[str] = None,
        description: Optional[str] = None,
        fence: Optional[int] = None,
    ) -> None: ...
    def append(self, key: Key, value: Any) -> int: ...
    def lock(self, key: Key, ttl: float = 10.0, wait: Optional[float] = None) -> Lease: ...
    def __delitem__(self, key: Key) -> None: ...
    def __contains__(self, key: object) -> bool: ...
    def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]: ...
    def put_many(
        self, items: Union[Mapping[Key, Any], Iterable[tuple[Key, Any]]]
    ) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Key]: ...
    def keys(self, prefix: Optional[Key] = None) -> KeysView[Key]: ...  # type: ignore[override]
    def owner(self, key: Key) -> Optional[str]: ...
    def replicas(self, key: Key) -> list[str]: ...
    def info(self, key: Key) -> Optional[Info]: ...
    def placement(self, key: Key) -> Optional[Placement]: ...
    def spread_keys(self, prefix: str, count: int) -> list[str]: ...
    def members(self) -> list[str]: ...
    def stats(self) -> dict[str, int]: ...

__all__ = ["BatchError", "Dict", "Info", "Lease", "Placement", "StoreError", "Ring"]
