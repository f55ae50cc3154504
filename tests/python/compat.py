#!/usr/bin/env python3
"""A Thrift client nobody here wrote, thriftpy2, against running thrifty-p2p nodes.

Usage: compat.py HOST:PORT HOST:PORT HOST:PORT   (the members of one ring)

The client is generated at run time from the IDL files in thrift/ and nothing
else, and talks like the 2009 command-line clients: binary protocol, buffered
unframed transport, one TCP connection per call. It checks the 2009 methods
(ping, service_type(s), get_all, get_node, put, get, debug) and the thrifty-p2p
additions (store, fetch, locate). Prints one line per check and exits 1 if any
check fails (2 on bad usage).
"""

import sys
import time
import traceback
import uuid

import thriftpy2

import idl  # tests/python/idl.py
from idl import diststore

TIMEOUT_MS = 5000
# put is oneway (never acknowledged), so reads poll for this long.
SETTLE_SECONDS = 10.0
# Keys unique to this run, so a rerun against the same ring starts clean.
RUN = uuid.uuid4().hex[:12]


def call(node, method, *args):
    """Makes one call over a fresh connection and closes it, as the 2009 clients did."""
    client = idl.connect(node, TIMEOUT_MS)
    try:
        return getattr(client, method)(*args)
    finally:
        client.close()


def unsigned(port):
    """A port as it travels (signed 16-bit) back to the real port."""
    return port & 0xFFFF


def poll(read, want):
    """Calls read() until it returns want or the settle time runs out; returns the last result."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        got = read()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


class Failed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failed(message)


# ---- the 2009 interface ----

def check_ping(nodes):
    for node in nodes:
        expect(call(node, "ping") is None, "ping returned a value")
    return "every node answers"


def check_service_type(nodes):
    for node in nodes:
        got = call(node, "service_type")
        expect(got == "diststore.Store", f"{node}: service_type {got!r}")
    return "diststore.Store"


def check_service_types(nodes):
    want = ["locator.Base", "locator.Locator", "diststore.Store"]
    for node in nodes:
        got = call(node, "service_types")
        expect(got == want, f"{node}: service_types {got!r}, expected {want!r}")
    return ", ".join(want)


def check_get_all(nodes):
    want = sorted(nodes)
    for node in nodes:
        members = call(node, "get_all")
        for m in members:
            expect(-32768 <= m.port <= 32767, f"port {m.port} is not an i16")
            real = unsigned(m.port)
            expect(m.port == (real - 65536 if real > 32767 else real),
                   f"port {real} travelled as {m.port}")
        got = sorted((m.address, unsigned(m.port)) for m in members)
        expect(got == want, f"{node}: get_all {got}, expected {want}")
    raw = sorted(m.port for m in call(nodes[0], "get_all"))
    return f"3 members; raw ports {raw} read back as {[p for _, p in want]}"


def check_get_node(nodes):
    members = set(nodes)
    for i in range(20):
        key = f"compat-{RUN}-owner-{i}"
        owners = set()
        for node in nodes:
            loc = call(node, "get_node", key)
            owner = (loc.address, unsigned(loc.port))
            expect(owner in members, f"{node}: get_node({key!r}) = {owner}, not a member")
            owners.add(owner)
        expect(len(owners) == 1, f"nodes disagree on the owner of {key!r}: {owners}")
    return "20 keys, every owner a member, all nodes agree"


def check_put_then_get(nodes):
    pairs = [
        (f"compat-{RUN}-text", "a plain value"),
        (f"compat-{RUN}-unicode-ключ", "naïve café ☃ 雪"),
        (f"compat-{RUN}-long", "0123456789abcdef" * 1024),
    ]
    for i, (key, value) in enumerate(pairs):
        writer = nodes[i % len(nodes)]
        reader = nodes[(i + 1) % len(nodes)]
        call(writer, "put", key, value)
        got = poll(lambda: call(reader, "get", key), value)
        expect(got == value, f"put via {writer}, get via {reader}: {got!r}, expected {value!r}")
    return f"{len(pairs)} values (incl. non-ASCII text) put via one node, read via another"


def check_get_absent(nodes):
    for node in nodes:
        got = call(node, "get", f"compat-{RUN}-never-put")
        expect(got == "", f"{node}: get of an absent key gave {got!r}, expected ''")
    return "absent key reads as ''"


# ---- thrifty-p2p additions ----

def check_store_then_fetch(nodes):
    every_byte = bytes(range(256))
    cases = [
        (b"\xff\xfe\x00compat-" + RUN.encode(), every_byte),
        (every_byte[::-1] + RUN.encode(), b"\x80\x81 not utf-8 \xc3\x28"),
        (b"compat-empty-" + RUN.encode(), b""),
    ]
    for i, (key, value) in enumerate(cases):
        writer = nodes[i % len(nodes)]
        expect(call(writer, "store", key, value) is None, "store returned a value")
        for reader in nodes:
            got = call(reader, "fetch", key).value
            expect(got == value,
                   f"store via {writer}, fetch via {reader}: {got!r}, expected {value!r}")
    return "all 256 byte values and an empty value, in keys and values, via every node"


def check_fetch_missing(nodes):
    for node in nodes:
        got = call(node, "fetch", b"compat-missing-" + RUN.encode())
        expect(got.value is None, f"{node}: fetch of a missing key gave {got.value!r}")
    return "value is None"


def check_locate(nodes):
    for i in range(20):
        key = f"compat-{RUN}-locate-{i}"
        node = nodes[i % len(nodes)]
        by_text = call(node, "get_node", key)
        by_bytes = call(node, "locate", key.encode())
        expect((by_text.address, by_text.port) == (by_bytes.address, by_bytes.port),
               f"{node}: get_node({key!r}) {by_text} != locate {by_bytes}")
    return "locate(key bytes) == get_node(key) for 20 keys"


def check_debug(nodes):
    for node in nodes:
        expect(call(node, "debug") is None, "debug returned a value")
    for node in nodes:
        call(node, "ping")
    key = f"compat-{RUN}-after-debug"
    call(nodes[0], "store", key.encode(), b"still here")
    got = call(nodes[2], "get", key)
    expect(got == "still here", f"get after debug gave {got!r}")
    return "oneway debug on every node; pings and reads still work"


CHECKS = [
    ("ping", check_ping),
    ("service_type", check_service_type),
    ("service_types", check_service_types),
    ("get_all", check_get_all),
    ("get_node", check_get_node),
    ("put then get", check_put_then_get),
    ("get of an absent key", check_get_absent),
    ("store then fetch", check_store_then_fetch),
    ("fetch of a missing key", check_fetch_missing),
    ("locate", check_locate),
    ("debug", check_debug),
]


def parse_node(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv):
    try:
        nodes = [parse_node(a) for a in argv[1:]]
    except ValueError as e:
        print(f"usage: {argv[0]} HOST:PORT HOST:PORT HOST:PORT ({e})", file=sys.stderr)
        return 2
    if len(nodes) != 3:
        print(f"usage: {argv[0]} HOST:PORT HOST:PORT HOST:PORT (the 3 members of a ring)",
              file=sys.stderr)
        return 2
    failed = 0
    for name, check in CHECKS:
        started = time.monotonic()
        took = lambda: f"{time.monotonic() - started:.2f}s"
        try:
            summary = check(nodes)
            print(f"ok    {name} ({took()}): {summary}", flush=True)
        except Failed as e:
            failed += 1
            print(f"FAIL  {name} ({took()}): {e}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL  {name} ({took()}): raised", flush=True)
            traceback.print_exc()
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} checks passed "
          f"(thriftpy2 {thriftpy2.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
