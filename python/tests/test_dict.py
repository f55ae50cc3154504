"""thrifty_p2p.Dict against a real 3-node ring (see conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import collections.abc
import os
import pickle
import socket
import subprocess
import threading

import numpy as np
import pytest

import thrifty_p2p
from conftest import Node, Proxy, tool_binary

MiB = 1 << 20


def test_a_dict_is_a_mutable_mapping_that_sets_gets_and_deletes(d):
    assert isinstance(d, collections.abc.MutableMapping)
    d["fruit"] = b"apple"
    assert d["fruit"] == b"apple"
    assert "fruit" in d
    d["fruit"] = b"banana"
    assert d["fruit"] == b"banana"
    del d["fruit"]
    assert "fruit" not in d
    assert d.get("fruit") is None
    assert d.get("fruit", b"none") == b"none"


def test_a_missing_key_raises_key_error_on_read_and_delete(d):
    with pytest.raises(KeyError):
        d["never-written"]
    with pytest.raises(KeyError):
        del d["never-written"]
    d["once"] = b"1"
    del d["once"]
    with pytest.raises(KeyError):
        del d["once"]
    assert d.pop("once", None) is None
    assert d.setdefault("later", b"x") == b"x"
    assert d.pop("later") == b"x"


def test_str_and_bytes_keys_name_the_same_item_and_other_keys_are_refused(d):
    d["café"] = b"1"
    assert d["café".encode()] == b"1"
    d[b"\xff\x00binary"] = b"2"
    assert d[b"\xff\x00binary"] == b"2"
    for bad in (1, 2.5, None, bytearray(b"k"), ("t",)):
        with pytest.raises(TypeError, match="keys are str or bytes"):
            d[bad] = b"v"
        with pytest.raises(TypeError):
            d[bad]
        assert bad not in d


def test_values_are_any_contiguous_buffer_and_come_back_as_bytes(d):
    d["ba"] = bytearray(b"\x00\x01\x02")
    assert d["ba"] == b"\x00\x01\x02" and type(d["ba"]) is bytes
    d["mv"] = memoryview(b"abcdef")[1:4]
    assert d["mv"] == b"bcd"
    d["empty"] = b""
    assert d["empty"] == b"" and "empty" in d
    floats = np.linspace(0, 1, 1000, dtype=np.float64)
    d["floats"] = floats
    assert np.array_equal(np.frombuffer(d["floats"], dtype=np.float64), floats)
    grid = np.arange(12, dtype=np.int32).reshape(3, 4)
    d["grid"] = grid
    assert d["grid"] == grid.tobytes()


def test_a_value_that_is_not_a_contiguous_buffer_is_a_type_error_and_stores_nothing(d):
    with pytest.raises(TypeError, match="not C-contiguous"):
        d["strided"] = np.arange(10, dtype=np.float64)[::2]
    with pytest.raises(TypeError, match="not C-contiguous"):
        d["fortran"] = np.asfortranarray(np.ones((3, 4)))
    with pytest.raises(TypeError, match="bytes-like"):
        d["text"] = "a str"
    with pytest.raises(TypeError, match="bytes-like"):
        d["number"] = 7
    assert "strided" not in d and "text" not in d


def test_a_64_mib_numpy_array_round_trips_as_a_streamed_value(d):
    big = np.random.default_rng(9).random(8 * MiB)  # 8 Mi float64: 64 MiB
    assert big.nbytes == 64 * MiB
    d["big"] = big
    back = d["big"]
    assert len(back) == big.nbytes
    assert np.array_equal(np.frombuffer(back, dtype=np.float64), big)
    del d["big"]
    assert "big" not in d


def test_a_value_of_hundreds_of_mib_written_by_storeput_reads_back_whole(d, ring):
    # 200 MiB streamed from storeput's standard input: 25 chunks on the ring.
    value = np.random.default_rng(7).integers(0, 256, 200 * MiB, dtype=np.uint8).tobytes()
    put = subprocess.run(
        [tool_binary("storeput"), "from-the-cli", "-", "--peer", ring[1]],
        input=value, capture_output=True, timeout=300,
    )
    assert put.returncode == 0, put.stderr.decode()
    got = d["from-the-cli"]
    assert len(got) == len(value)
    assert hashlib.md5(got).digest() == hashlib.md5(value).digest()
    assert len(d.placement("from-the-cli").parts) == 25


def test_the_pickle_serializer_stores_any_picklable_object(ring):
    p = thrifty_p2p.Dict(ring[1], serializer="pickle")
    p["obj"] = {"a": [1, 2.5, None], "b": ("t", b"x")}
    assert p["obj"] == {"a": [1, 2.5, None], "b": ("t", b"x")}
    p["text"] = "a str is fine here"
    assert p["text"] == "a str is fine here"
    # Both views name the same item; the raw one sees the pickle.
    raw = thrifty_p2p.Dict(ring[2])
    assert raw["text"].startswith(b"\x80")
    with pytest.raises(ValueError, match="serializer"):
        thrifty_p2p.Dict(ring[0], serializer="json")


def test_owner_replicas_members_and_stats_describe_the_ring(d, ring):
    assert sorted(d.members()) == sorted(ring)
    for key in ("a", b"b", "c-key"):
        replicas = d.replicas(key)
        assert len(replicas) == 3 and sorted(replicas) == sorted(ring)
        assert replicas[0] == d.owner(key)
    stats = d.stats()
    assert isinstance(stats, dict)
    assert stats["replicas"] == 3
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in stats.items())


def test_info_and_placement_describe_a_value_and_its_parts_and_spread_keys_go_round(d, ring):
    d["plain"] = b"x"
    placement = d.placement("plain")
    assert placement.replicas == d.replicas("plain") and placement.parts == []
    d["large"] = bytes(17 << 20)  # three 8 MiB chunks
    placement = d.placement("large")
    assert len(placement.parts) == 3
    assert all(sorted(holders) == sorted(ring) for holders in placement.parts)
    assert d.placement("never-written") is None
    info = d.info("large")
    assert (info.size, info.streamed, info.part_bytes, info.parts) == (17 << 20, True, 8 << 20, 3)
    assert d.info("plain")[:4] == (1, False, 1, 1)
    assert d.info("never-written") is None
    old_id = info.id
    d["large"] = bytes(17 << 20)
    assert d.info("large").id != old_id
    members = sorted(d.members())
    keys = d.spread_keys("part-", 9)
    assert [d.owner(k) for k in keys] == [members[i % 3] for i in range(9)]
    assert all(k.startswith("part-") and len(k) == 21 for k in keys)


def test_a_value_over_the_nodes_limit_raises_store_error_too_large():
    node = Node(None, "--max-value-bytes", "1024")
    try:
        small = thrifty_p2p.Dict(node.addr)
        with pytest.raises(thrifty_p2p.StoreError) as caught:
            small["k"] = bytes(2048)
        assert caught.value.kind == "TooLarge"
        assert caught.value.transient is False
        assert "--max-value-bytes" in str(caught.value)
        assert "k" not in small
    finally:
        node.stop()


def test_an_unreachable_peer_raises_a_transient_store_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(thrifty_p2p.StoreError) as caught:
        thrifty_p2p.Dict(f"127.0.0.1:{port}")
    assert caught.value.kind == "Unreachable"
    assert caught.value.transient is True
    assert "location PORT" in str(caught.value)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (str(again), again.kind, again.transient) == (str(caught.value), "Unreachable", True)
    with pytest.raises(thrifty_p2p.StoreError) as caught:
        thrifty_p2p.Dict("not an address")
    assert caught.value.kind == "BadAddress"


def test_threads_sharing_a_dict_each_see_their_own_writes(d):
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                key = f"thread-{t}-{i}"
                d[key] = f"{t}:{i}".encode()
                assert d[key] == f"{t}:{i}".encode()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(d[f"thread-{t}-24"] == f"{t}:24".encode() for t in range(8))


@pytest.mark.parametrize("size", [100, 9 * MiB])
def test_python_threads_run_during_a_put_which_reads_the_value_in_place(ring, size):
    # Every call below goes through a proxy run by Python threads: it can
    # only finish if the native call released the GIL. While the put is
    # under way, the proxy tries to resize the bytearray being stored: that
    # fails (BufferError) exactly when the put reads it in place, exported,
    # rather than a copy.
    value = bytearray(os.urandom(size))
    seen: list[str] = []
    armed = threading.Event()

    def on_request(_data: bytes) -> None:
        if not armed.is_set():
            return
        try:
            value.append(0)
            value.pop()
            seen.append("resized")
        except BufferError:
            seen.append("exported")

    proxy = Proxy(ring[0], on_request)
    try:
        through = thrifty_p2p.Dict(proxy.addr)  # the first call: through the proxy
        armed.set()
        through[f"gil-{size}"] = value
        armed.clear()
        assert "exported" in seen and "resized" not in seen, seen
        other = thrifty_p2p.Dict(ring[1])
        assert other[f"gil-{size}"] == bytes(value)
        del other[f"gil-{size}"]
    finally:
        proxy.close()



def test_a_ring_requiring_a_client_secret_takes_it_from_secret_file_or_the_environment(
    tmp_path, monkeypatch
):
    secret = tmp_path / "client.secret"
    secret.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    node = Node(None, "--client-secret-file", str(secret))
    try:
        monkeypatch.delenv("THRIFTY_CLIENT_SECRET_FILE", raising=False)
        with pytest.raises(thrifty_p2p.StoreError) as caught:
            thrifty_p2p.Dict(node.addr)["k"] = b"v"
        assert caught.value.kind == "Unauthorized"
        thrifty_p2p.Dict(node.addr, secret_file=secret)["k"] = b"v"
        monkeypatch.setenv("THRIFTY_CLIENT_SECRET_FILE", str(secret))
        assert thrifty_p2p.Dict(node.addr)["k"] == b"v"
    finally:
        node.stop()


def test_the_cluster_secret_opens_a_ring_that_requires_one(tmp_path, monkeypatch):
    secret = tmp_path / "cluster.secret"
    secret.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    node = Node(None, "--cluster-secret-file", str(secret))
    try:
        monkeypatch.delenv("THRIFTY_CLUSTER_SECRET_FILE", raising=False)
        thrifty_p2p.Dict(node.addr, cluster_secret_file=secret)["k"] = b"v"
        monkeypatch.setenv("THRIFTY_CLUSTER_SECRET_FILE", str(secret))
        assert thrifty_p2p.Dict(node.addr)["k"] == b"v"
    finally:
        node.stop()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _identity(tmp_path, name: str, ca=None):
    """A P-256 key and certificate for 127.0.0.1: self-signed as a CA, or
    signed by ``ca`` (its certificate and key) for nodes and clients."""
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    if ca is None:
        _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", "2",
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE")
        return cert, key
    request = tmp_path / f"{name}.csr"
    extensions = tmp_path / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "extendedKeyUsage=serverAuth,clientAuth\n"
                          "basicConstraints=CA:FALSE\n")
    _openssl("req", "-new", "-key", str(key), "-out", str(request), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions))
    return cert, key


def test_tls_options_reach_a_ring_that_serves_only_tls(tmp_path, monkeypatch):
    for variable in ("THRIFTY_TLS_CERT", "THRIFTY_TLS_KEY", "THRIFTY_TLS_CA"):
        monkeypatch.delenv(variable, raising=False)
    ca = _identity(tmp_path, "ca")
    node_cert, node_key = _identity(tmp_path, "node", ca)
    client_cert, client_key = _identity(tmp_path, "client", ca)
    node = Node(None, "--tls-cert", str(node_cert), "--tls-key", str(node_key),
                "--tls-ca", str(ca[0]))
    try:
        d = thrifty_p2p.Dict(node.addr, tls_cert=client_cert, tls_key=client_key, tls_ca=ca[0])
        d["k"] = b"over tls"
        assert d["k"] == b"over tls"
        # Without TLS the node does not answer as a store; with two of three
        # files the Dict refuses to start.
        with pytest.raises(thrifty_p2p.StoreError):
            thrifty_p2p.Dict(node.addr)["k"]
        with pytest.raises(ValueError, match="tls_ca missing"):
            thrifty_p2p.Dict(node.addr, tls_cert=client_cert, tls_key=client_key)
    finally:
        node.stop()


def test_iteration_len_and_keys_with_a_prefix_list_every_key_once_across_pages(d, monkeypatch):
    # Small pages, so the listing takes many cursors.
    monkeypatch.setattr(thrifty_p2p, "_PAGE", 7)
    written = {f"list/{i:03d}" for i in range(60)} | {b"list/\xff\xfe"}
    for key in written:
        d[key] = b"v"
    d["other/1"] = b"v"
    listed = list(d.keys(prefix="list/"))
    assert len(listed) == len(set(listed)) == len(written)
    assert set(listed) == written  # str when UTF-8, bytes otherwise
    assert set(d.keys(prefix=b"list/")) == written
    assert len(d.keys(prefix="list/")) == len(written)
    assert "list/007" in d.keys(prefix="list/")
    assert "other/1" not in d.keys(prefix="list/") and "list/999" not in d.keys(prefix="list/")
    everything = list(d)
    assert len(everything) == len(set(everything)) == len(d)
    assert written | {"other/1"} <= set(everything)
    assert set(d.keys()) == set(everything)
    del d["list/000"]
    assert "list/000" not in set(d.keys(prefix="list/"))
    assert len(d.keys(prefix="list/")) == len(written) - 1
    with pytest.raises(TypeError):
        d.keys(prefix=5)


def test_a_dict_of_a_ring_is_a_whole_mapping(ring):
    d = thrifty_p2p.Dict(ring[2])
    for key in list(d.keys(prefix="whole/")):
        del d[key]
    d.update({"whole/a": b"1", "whole/b": b"2"})
    assert {k: d[k] for k in d.keys(prefix="whole/")} == {"whole/a": b"1", "whole/b": b"2"}
    assert dict(d.items()) == {k: d[k] for k in d}
