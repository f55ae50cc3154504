"""Leases with fencing tokens (Dict.lock) against a real 3-node ring (see conftest.py)."""

from __future__ import annotations

import threading

import pytest

import thrifty_p2p


def test_a_lease_is_a_context_manager_giving_a_token_that_fences_writes(d):
    with d.lock("py-job", ttl=10.0) as token:
        d.put("py-job", b"step 1", fence=token)
        with pytest.raises(thrifty_p2p.StoreError) as held:
            d.lock("py-job", ttl=10.0)
        assert held.value.kind == "Held"
        assert "until" in str(held.value)
    # Unlocked on exit: the key is free at once, with a larger token.
    lease = d.lock("py-job", ttl=10.0)
    assert lease.token > token
    with pytest.raises(thrifty_p2p.StoreError) as stale:
        d.put("py-job", b"late", fence=token)
    assert stale.value.kind == "StaleToken"
    assert d["py-job"] == b"step 1"
    lease.renew(30.0)
    d.put("py-job", b"step 2", fence=lease.token)
    lease.unlock()
    with pytest.raises(thrifty_p2p.StoreError) as again:
        lease.unlock()
    assert again.value.kind == "StaleToken"
    assert d["py-job"] == b"step 2"


def test_lock_with_wait_gets_the_lease_once_its_holder_unlocks(ring):
    first = thrifty_p2p.Dict(ring[0]).lock("py-wait", ttl=30.0)
    got = []
    waiter = threading.Thread(
        target=lambda: got.append(thrifty_p2p.Dict(ring[1]).lock("py-wait", ttl=5.0, wait=60.0))
    )
    waiter.start()
    first.unlock()
    waiter.join(90)
    assert not waiter.is_alive()
    assert got[0].token > first.token
    got[0].unlock()


def test_bad_ttls_and_waits_are_clear_errors(d):
    for ttl in (0.0, 86_400.001 * 2):
        with pytest.raises(thrifty_p2p.StoreError) as refused:
            d.lock("py-bad", ttl=ttl)
        assert refused.value.kind == "Refused"
        assert "86400000 ms" in str(refused.value)
    for ttl in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl is a number of seconds"):
            d.lock("py-bad", ttl=ttl)
    with pytest.raises(ValueError, match="wait is a number of seconds"):
        d.lock("py-bad", ttl=1.0, wait=-2.0)
