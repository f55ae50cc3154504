#!/usr/bin/env python3
"""Writes the seed corpus of frame_scan and request_decode from tests/golden.

Every request fixture (the bytes the generated client writes for each RPC),
the 2009 methods again with the unversioned header, a few replies, and
hostile messages: huge declared lengths and counts, deep nesting, negative
sizes, a bad version, plain text. frame_scan's inputs start with a count of
cut points (see fuzz_targets/frame_scan.rs): 0, or a few cuts for some.

Run from anywhere: python3 tests/fuzz/seeds.py. It rewrites only the files
it names (corpus/<target>/seed-*); files cargo fuzz cmin kept stay.
"""

import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
GOLDEN = FUZZ.parent / "golden"


def parse_hex(text):
    digits = "".join(
        "".join(line.split("#", 1)[0].split()) for line in text.splitlines()
    )
    return bytes.fromhex(digits)


def strict_header(name, kind=1, seq=1):
    name = name.encode()
    return b"\x80\x01\x00" + bytes([kind]) + struct.pack(">i", len(name)) + name + struct.pack(">i", seq)


def unversioned(message):
    """The same message with the old header: i32 name length, name, type, seq."""
    (length,) = struct.unpack(">i", message[4:8])
    name = message[8 : 8 + length]
    kind = message[3]
    seq = message[8 + length : 12 + length]
    body = message[12 + length :]
    return struct.pack(">i", length) + name + bytes([kind]) + seq + body


def field(ty, fid):
    return bytes([ty]) + struct.pack(">h", fid)


STOP = b"\x00"
STRING, STRUCT, MAP, LIST, I32 = 11, 12, 13, 15, 8


def hostile():
    store = strict_header("store")
    yield "huge-string", store + field(STRING, 1) + struct.pack(">i", 0x7FFFFFFF)
    yield "value-past-limit", store + field(STRING, 1) + struct.pack(">i", 1) + b"k" + field(
        STRING, 2
    ) + struct.pack(">i", 64 * 1024 * 1024 + 1)
    yield "negative-length", store + field(STRING, 1) + struct.pack(">i", -1)
    yield "two-billion-list", strict_header("peek") + field(LIST, 1) + bytes([STRING]) + struct.pack(
        ">i", 2_000_000_000
    )
    yield "million-map", strict_header("stats") + field(MAP, 1) + bytes([STRING, I32]) + struct.pack(
        ">i", 1_000_000
    )
    yield "nested-structs", strict_header("gossip") + (field(STRUCT, 1) * 100) + STOP * 101
    yield "nested-lists", strict_header("absorb") + field(LIST, 1) + (
        bytes([LIST]) + struct.pack(">i", 1)
    ) * 80 + bytes([I32]) + struct.pack(">i", 0)
    yield "bad-version", b"\x80\x02\x00\x01" + struct.pack(">i", 4) + b"ping" + struct.pack(">i", 1) + STOP
    yield "bad-type-code", strict_header("ping") + field(9, 1) + STOP
    yield "long-name", b"\x80\x01\x00\x01" + struct.pack(">i", 256) + b"p" * 256
    yield "http", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    yield "store-key-as-i32", store + field(I32, 1) + struct.pack(">i", 7) + field(STRING, 2) + struct.pack(
        ">i", 1
    ) + b"v" + STOP
    yield "get-not-utf8", strict_header("get") + field(STRING, 1) + struct.pack(">i", 2) + b"\xff\xfe" + STOP
    yield "relay-store-missing-version", strict_header("relay_store") + field(STRING, 1) + struct.pack(
        ">i", 1
    ) + b"k" + field(STRING, 2) + struct.pack(">i", 1) + b"v" + field(3, 3) + b"\x01" + STOP
    yield "reply-not-call", strict_header("ping", kind=2) + STOP


def write(target, name, data):
    path = FUZZ / "corpus" / target / f"seed-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main():
    requests = sorted(GOLDEN.glob("*.request.hex"))
    for path in requests:
        name = path.name[: -len(".request.hex")]
        message = parse_hex(path.read_text())
        write("request_decode", name, message)
        write("frame_scan", name, b"\x00" + message)
    for name in ["ping", "get", "put", "store", "fetch"]:
        message = parse_hex((GOLDEN / f"{name}.request.hex").read_text())
        write("request_decode", f"{name}-unversioned", unversioned(message))
        write("frame_scan", f"{name}-unversioned", b"\x00" + unversioned(message))
    # Pipelined: a oneway put, then a ping.
    put = parse_hex((GOLDEN / "put.request.hex").read_text())
    ping = parse_hex((GOLDEN / "ping.request.hex").read_text())
    write("request_decode", "put-then-ping", put + ping)
    write("frame_scan", "put-then-ping", b"\x00" + put + ping)
    # Replies (the client's reader scans them too).
    for name in ["fetch", "gossip", "stats", "no_such_method", "diff_buckets"]:
        reply = parse_hex((GOLDEN / f"{name}.reply.hex").read_text())
        write("frame_scan", f"{name}-reply", b"\x00" + reply)
    # The store request in pieces: cuts inside the header, a length and the value.
    store = parse_hex((GOLDEN / "store.request.hex").read_text())
    cuts = [1, 2, 9, 14, 20, 30, len(store) - 1]
    write(
        "frame_scan",
        "store-in-pieces",
        bytes([len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts) + store,
    )
    for name, data in hostile():
        write("request_decode", f"hostile-{name}", data)
        write("frame_scan", f"hostile-{name}", b"\x00" + data)


if __name__ == "__main__":
    main()
