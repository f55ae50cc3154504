#!/usr/bin/env python3
"""Large values from a Thrift client nobody here wrote (thriftpy2), through the IDL alone.

Usage: large.py STOREPUT STOREGET SIZE_MIB HOST:PORT HOST:PORT HOST:PORT

Against a running ring (the three members given), with the command-line tools
at STOREPUT and STOREGET:

1. pipes SIZE_MIB MiB of pseudo-random bytes into `storeput KEY -` (the Rust
   client streams them as chunks), then reads the value back with `describe`
   and `read_range`, one 8 MiB range at a time (the only buffer held), and
   checks its size and MD5 against what was written;
2. checks that `fetch` of it answers StoreError STREAMED naming `read_range`,
   and the 2009 `get` an application error with the same words;
3. uploads a value in parts with `begin_upload`, `upload_part` (the parts out
   of order) and `commit_upload`, and checks that `storeget` on another node
   writes back exactly those bytes;
4. replaces that value with `store` and checks that a `read_range` holding
   the old value's id answers CHANGED.

Prints one line per step (with MB/s figures) and exits 1 on the first failure
(2 on bad usage). Keeps no more than one range or one part in memory.
"""

import hashlib
import random
import subprocess
import sys
import time
import uuid

from thriftpy2.thrift import TApplicationException

import idl  # tests/python/idl.py
from idl import diststore
ErrorKind = diststore.ErrorKind

MIB = 1 << 20
RANGE = 8 * MIB
PART = 4 * MIB
TIMEOUT_MS = 60000
RUN = uuid.uuid4().hex[:12]


def connect(node):
    return idl.connect(node, TIMEOUT_MS)


def blocks(seed, size, block):
    """`size` pseudo-random bytes from `seed`, `block` bytes at a time."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(block, left)
        yield rng.randbytes(n)
        left -= n


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def read_streamed(client, key):
    """Reads `key` with describe + read_range, one range in memory at a time."""
    info = client.describe(key)
    if not info.exists:
        fail(f"describe says {key!r} does not exist")
    md5 = hashlib.md5()
    offset = 0
    while offset < info.size:
        data = client.read_range(key, offset, RANGE, info.id)
        if not data:
            fail(f"read_range answered nothing at {offset} of {info.size}")
        md5.update(data)
        offset += len(data)
    return info, offset, md5.hexdigest()


def main(argv):
    if len(argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    storeput, storeget, size_mib = argv[1], argv[2], int(argv[3])
    nodes = []
    for arg in argv[4:]:
        host, _, port = arg.rpartition(":")
        nodes.append((host, int(port)))
    peer = [f"{h}:{p}" for h, p in nodes]
    size = size_mib * MIB

    # 1. storeput from stdin, read back through the IDL.
    key = f"big-{RUN}".encode()
    md5 = hashlib.md5()
    started = time.monotonic()
    put = subprocess.Popen([storeput, "--peer", peer[0], key.decode(), "-"],
                           stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    for block in blocks(1, size, RANGE):
        md5.update(block)
        put.stdin.write(block)
    put.stdin.close()
    err = put.stderr.read().decode()
    if put.wait() != 0:
        fail(f"storeput exited {put.returncode}: {err}")
    took = time.monotonic() - started
    print(f"ok storeput of {size_mib} MiB from stdin: {size / MIB / took:.0f} MiB/s")

    client = connect(nodes[1])
    started = time.monotonic()
    info, got, digest = read_streamed(client, key)
    took = time.monotonic() - started
    if not info.streamed or info.size != size or got != size:
        fail(f"describe/read_range: {info}, read {got} bytes of {size}")
    if digest != md5.hexdigest():
        fail(f"read back MD5 {digest}, wrote {md5.hexdigest()}")
    print(f"ok describe + read_range of {size_mib} MiB in {RANGE // MIB} MiB ranges: "
          f"{size / MIB / took:.0f} MiB/s, MD5 matches ({info.parts} parts of {info.part_bytes})")

    # 2. fetch and get name the streaming methods.
    try:
        client.fetch(key)
        fail("fetch of a streamed value answered")
    except diststore.StoreError as e:
        if e.kind != ErrorKind.STREAMED or "read_range" not in e.message:
            fail(f"fetch: {e.kind} {e.message}")
        print(f"ok fetch answers STREAMED: {e.message}")
    client.close()
    legacy = connect(nodes[2])
    try:
        legacy.get(key.decode())
        fail("the 2009 get of a streamed value answered")
    except TApplicationException as e:
        if "read_range" not in e.message:
            fail(f"get: {e.message}")
        print("ok get (2009) answers an application error naming read_range")
    legacy.close()

    # 3. Upload in parts, read back by storeget on another node.
    key = f"parts-{RUN}".encode()
    upload_size = max(size // 4, 3 * PART + 1)
    uploader = connect(nodes[0])
    upload = uploader.begin_upload(key)
    md5 = hashlib.md5()
    started = time.monotonic()
    parts = list(enumerate(blocks(2, upload_size, PART)))
    # Hashing in order, sending the last part first: parts may come in any order.
    for _, block in parts:
        md5.update(block)
    for index, block in reversed(parts):
        uploader.upload_part(key, upload, index, block)
    del parts
    committed = uploader.commit_upload(key, upload)
    took = time.monotonic() - started
    uploader.close()
    if committed.size != upload_size or not committed.streamed:
        fail(f"commit_upload answered {committed}")
    print(f"ok begin_upload + upload_part + commit_upload of {upload_size / MIB:.0f} MiB "
          f"in {PART // MIB} MiB parts: {upload_size / MIB / took:.0f} MiB/s")

    get = subprocess.Popen([storeget, "--peer", peer[2], key.decode()],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    back = hashlib.md5()
    got = 0
    while True:
        block = get.stdout.read(RANGE)
        if not block:
            break
        back.update(block)
        got += len(block)
    err = get.stderr.read().decode()
    if get.wait() != 0:
        fail(f"storeget exited {get.returncode}: {err}")
    if got != upload_size or back.hexdigest() != md5.hexdigest():
        fail(f"storeget wrote {got} bytes, MD5 {back.hexdigest()}; uploaded {upload_size}, "
             f"MD5 {md5.hexdigest()}")
    print("ok storeget reads the uploaded value back identically")

    # 4. A reader holding the old id is told the value changed.
    client = connect(nodes[1])
    client.store(key, b"now small")
    try:
        client.read_range(key, 0, 16, committed.id)
        fail("read_range with a replaced value's id answered")
    except diststore.StoreError as e:
        if e.kind != ErrorKind.CHANGED:
            fail(f"read_range after a replace: {e.kind} {e.message}")
    if client.read_range(key, 4, 100, 0) != b"small":
        fail("read_range of the plain value differs")
    client.close()
    print("ok read_range holding a replaced value's id answers CHANGED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
