"""The package's exception, raised by the native layer for any failure of the ring or client."""


class StoreError(Exception):
    """A call to the ring failed.

    ``str(error)`` says what went wrong and what to do. ``kind`` names the
    failure as the Rust library's ``ErrorKind`` does ("TooLarge",
    "Unreachable", "Quorum", "Unauthorized", ...), the same whether it
    happened here or on a node; ``transient`` says whether retrying the same
    call may succeed (every write is versioned, so repeating one is safe).
    """

    def __init__(self, message: str, kind: str, transient: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.transient = transient

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickled whole (for multiprocessing, say): the default pickles only the message.
        return (type(self), (str(self), self.kind, self.transient))

    def __repr__(self) -> str:
        return f"StoreError({str(self)!r}, kind={self.kind!r}, transient={self.transient})"


class BatchError(StoreError):
    """Some keys of a ``Dict.get_many`` or ``Dict.put_many`` failed; the others were done.

    ``errors`` maps each failed key (as given) to its ``StoreError``;
    ``values`` holds what ``get_many`` did read (empty for ``put_many``).
    ``kind`` is the first failure's kind, and ``transient`` is true when
    every failure is transient, so retrying just ``errors`` may succeed.
    """

    def __init__(self, message: str, kind: str, transient: bool, errors=None, values=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(message, kind, transient)
        self.errors = dict(errors or {})
        self.values = dict(values or {})

    @classmethod
    def of(cls, errors, values, total):  # type: ignore[no-untyped-def]
        """The error for ``errors`` ({key: StoreError}) out of ``total`` keys."""
        key, first = next(iter(errors.items()))
        message = f"{len(errors)} of {total} keys failed; the first, {key!r}: {first}"
        transient = all(e.transient for e in errors.values())
        return cls(message, first.kind, transient, errors, values)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.kind, self.transient, self.errors, self.values))

    def __repr__(self) -> str:
        return f"BatchError({str(self)!r}, kind={self.kind!r}, errors={len(self.errors)})"
