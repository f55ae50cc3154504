#!/usr/bin/env python3
"""Proving a thrifty-p2p client secret from Python with nothing but `hmac`.

Usage: auth.py HOST:PORT SECRET_FILE   (a node started with --client-secret-file)

The client is generated at run time from the IDL in thrift/. Without the proof
a `store` is refused with StoreError kind UNAUTHORIZED; after `hello` and
`authenticate` (see `authenticate` in thrift/diststore.thrift) the same
connection stores and fetches, and the node's answer proves that it holds the
secret too. Exits 1 if any check fails.
"""

import hashlib
import hmac
import os
import sys

from thriftpy2.rpc import make_client

from idl import diststore  # tests/python/idl.py


def mac(secret, *parts):
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[1].rsplit(":", 1)
    with open(sys.argv[2], "rb") as f:
        secret = f.read()
    if secret.endswith(b"\n"):
        secret = secret[:-1]
    client = make_client(diststore.Store, host, int(port), timeout=5000)

    try:
        client.store(b"py-auth", b"refused")
        print("FAIL: a store without the secret was accepted")
        return 1
    except diststore.StoreError as e:
        assert e.kind == diststore.ErrorKind.UNAUTHORIZED, e
        assert "--client-secret-file" in e.message, e.message
        print("ok: a store without the secret is refused:", e.message)

    mine = os.urandom(32)
    theirs = client.hello(mine)
    answer = client.authenticate(
        "client", mac(secret, b"thrifty-p2p/1 client ", b"client", theirs, mine))
    expected = mac(secret, b"thrifty-p2p/1 server ", b"client", mine, theirs)
    if not hmac.compare_digest(answer, expected):
        print("FAIL: the node did not prove the secret back")
        return 1
    print("ok: the node proved the secret back")

    client.store(b"py-auth", b"stored")
    value = client.fetch(b"py-auth").value
    if value != b"stored":
        print("FAIL: fetched", value)
        return 1
    print("ok: after authenticate the connection stores and fetches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
