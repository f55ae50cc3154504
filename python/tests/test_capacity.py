"""--max-memory and --weight seen from Python, against real nodes (see conftest.py)."""

from __future__ import annotations

import pytest

import thrifty_p2p
from conftest import Node, start_ring, wait_until


def test_a_write_over_the_cap_raises_full_and_an_erase_makes_room():
    node = Node(None, "--max-memory", "1K")
    try:
        d = thrifty_p2p.Dict(node.addr)
        assert d.stats()["max_memory_bytes"] == 1024
        d["a"] = b"x" * 1023  # 1 + 1023 bytes: exactly the cap
        with pytest.raises(thrifty_p2p.StoreError) as raised:
            d["b"] = b"y"
        error = raised.value
        assert error.kind == "Full"
        assert not error.transient
        assert f"{node.addr} is full" in str(error)
        assert "erase keys, raise --max-memory, or add nodes" in str(error)
        assert d["a"] == b"x" * 1023  # nothing evicted
        assert "b" not in d
        del d["a"]
        d["b"] = b"y"
        assert d["b"] == b"y"
    finally:
        node.stop()


def test_a_heavier_member_reports_its_weight_and_a_larger_share():
    nodes = start_ring(1, "--weight", "3")
    nodes.append(Node(nodes[0].addr))
    try:
        heavy = thrifty_p2p.Dict(nodes[0].addr)
        wait_until(lambda: len(heavy.members()) == 2, 20, "two members")
        wait_until(lambda: heavy.stats()["share_ppm"] < 900_000, 20, "the second member to count")
        assert heavy.stats()["weight"] == 3
        assert 700_000 < heavy.stats()["share_ppm"] < 800_000
        light = thrifty_p2p.Dict(nodes[1].addr)
        for i in range(50):
            light[f"k{i}"] = str(i).encode()
        owners = [heavy.owner(f"k{i}") for i in range(50)]
        assert owners.count(nodes[0].addr) > 25
        for i in range(50):
            assert heavy[f"k{i}"] == str(i).encode()
    finally:
        for n in nodes:
            n.stop()
