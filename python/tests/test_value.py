"""Dict.put with options, Dict.append and Dict.info's metadata, against a
real 3-node ring (see conftest.py)."""

from __future__ import annotations

import threading

import pytest

import thrifty_p2p

from conftest import start_ring


def test_put_stores_metadata_that_info_returns_and_a_plain_set_drops(d):
    d.put("page", b"<p>hi</p>", content_type="text/html", description="the front page")
    info = d.info("page")
    assert (info.size, info.content_type, info.description) == (9, "text/html", "the front page")
    assert d["page"] == b"<p>hi</p>"
    d["page"] = b"plain"
    info = d.info("page")
    assert (info.content_type, info.description) == (None, None)


def test_create_only_raises_exists_and_changes_nothing(d):
    d.put("once", b"first", create_only=True)
    with pytest.raises(thrifty_p2p.StoreError) as caught:
        d.put("once", b"second", create_only=True)
    assert caught.value.kind == "Exists"
    assert caught.value.transient is False
    assert d["once"] == b"first"


def test_of_concurrent_create_only_puts_through_every_node_exactly_one_wins(ring):
    dicts = [thrifty_p2p.Dict(peer) for peer in ring]
    barrier = threading.Barrier(9)
    outcomes: list[object] = [None] * 9

    def writer(i: int) -> None:
        barrier.wait()
        try:
            dicts[i % 3].put("race-py", f"writer {i}".encode(), create_only=True)
            outcomes[i] = "won"
        except thrifty_p2p.StoreError as e:
            outcomes[i] = e.kind

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1, outcomes
    assert outcomes.count("Exists") == 8, outcomes
    winner = outcomes.index("won")
    assert dicts[2]["race-py"] == f"writer {winner}".encode()


def test_append_creates_grows_and_keeps_metadata(d, ring):
    d.put("journal", b"a", content_type="text/plain")
    assert d.append("journal", b"bc") == 3
    other = thrifty_p2p.Dict(ring[2])
    assert other.append("journal", memoryview(b"def")) == 6
    assert d["journal"] == b"abcdef"
    assert d.info("journal").content_type == "text/plain"
    assert d.append("new-journal", b"xyz") == 3


def test_a_compressible_value_reports_its_stored_size():
    """Compression is off by default: this ring turns it on."""
    nodes = start_ring(1, "--compress-above", "4096")
    try:
        check_stored_size(thrifty_p2p.Dict(nodes[0].addr))
    finally:
        for n in nodes:
            n.stop()


def check_stored_size(d):
    value = b"compress me, compress me! " * 40_000
    d["squeezed"] = value
    info = d.info("squeezed")
    assert info.size == len(value)
    assert info.stored_bytes is not None and info.stored_bytes < len(value) // 4
    assert d["squeezed"] == value


def test_append_refuses_a_pickling_dict(ring):
    pickled = thrifty_p2p.Dict(ring[0], serializer="pickle")
    with pytest.raises(TypeError, match="pickle"):
        pickled.append("k", b"v")
