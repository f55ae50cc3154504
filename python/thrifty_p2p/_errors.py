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
