"""Dict.get_many and Dict.put_many against real rings (see conftest.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import thrifty_p2p
from conftest import Node

MiB = 1 << 20


def test_put_many_then_get_many_moves_many_keys_of_any_kind_in_few_calls(d):
    items = {f"batch{i}": f"value {i}".encode() * (1 + i % 5) for i in range(300)}
    items[b"\x00\xffbinary"] = bytearray(b"raw")
    items["array"] = np.arange(1000, dtype=np.int64)
    items["big"] = bytes(9 * MiB)  # more than a chunk: streamed
    d.put_many(items)

    found = d.get_many(list(items) + ["never written"])
    assert "never written" not in found
    assert set(found) == set(items)
    for key, value in items.items():
        expected = value.tobytes() if isinstance(value, np.ndarray) else bytes(value)
        assert found[key] == expected, key
    # Each was stored as d[key] = value would store it.
    assert d["batch7"] == items["batch7"]
    # Pairs work too, and of two pairs for one key the later wins.
    d.put_many([("twice", b"first"), ("twice", b"second")])
    assert d.get_many(["twice"]) == {"twice": b"second"}
    assert d.get_many([]) == {}


def test_a_failed_item_raises_batch_error_naming_it_and_the_others_are_stored():
    node = Node(None, "--max-value-bytes", "1024")
    try:
        d = thrifty_p2p.Dict(node.addr)
        with pytest.raises(thrifty_p2p.BatchError) as raised:
            d.put_many({"small": b"s", "large": bytes(2048), "other": b"o"})
        error = raised.value
        assert isinstance(error, thrifty_p2p.StoreError)
        assert set(error.errors) == {"large"}
        assert error.errors["large"].kind == "TooLarge"
        assert error.kind == "TooLarge" and not error.transient
        assert "1 of 3 keys failed" in str(error) and "max-value-bytes" in str(error)
        assert d.get_many(["small", "large", "other"]) == {"small": b"s", "other": b"o"}
        again = pickle.loads(pickle.dumps(error))
        assert set(again.errors) == {"large"} and str(again) == str(error)
    finally:
        node.stop()


def test_the_pickle_serializer_applies_to_batches(ring):
    d = thrifty_p2p.Dict(ring[0], serializer="pickle")
    d.put_many({"obj1": {"a": [1, 2]}, "obj2": None})
    assert d.get_many(["obj1", "obj2", "obj3"]) == {"obj1": {"a": [1, 2]}, "obj2": None}
