"""The capacity rules on their own (no server): per-key limits, the priority reserve, flex's
share, queue, wait bound, disconnect and drain. The servers' tests prove them end to end."""

from __future__ import annotations

import asyncio

import pytest

from deepinfra_serve.config.tiers import FlexTier, PriorityTier, ServiceTiers, TierPolicy
from deepinfra_serve.engine.errors import APIError
from deepinfra_serve.engine.lifecycle import Lifecycle
from deepinfra_serve.http.auth import ApiKeys, KeyEntry, parse_entry, read_entries
from deepinfra_serve.http.capacity import Capacity

POLICY = TierPolicy.of(
    ServiceTiers(priority=PriorityTier(reserve=0.25), flex=FlexTier(share=0.5)), limit=4
)
DEFAULT, PRIORITY, FLEX = (POLICY.tiers[t] for t in ("default", "priority", "flex"))
KEYS = ApiKeys([KeyEntry("a", 2), KeyEntry("b")], default_rate_limit=200)
A, B = KEYS.tenants


def _capacity() -> Capacity:
    return Capacity(POLICY, Lifecycle("test-model"), len(KEYS), "test-model")


def _code(call: object) -> str:
    with pytest.raises(APIError) as err:
        call()  # type: ignore[operator]
    assert err.value.status == 429 and err.value.headers == {"Retry-After": "1"}
    return str(err.value.code)


def test_key_entries_carry_their_own_limit() -> None:
    assert parse_entry("sk-1 rate_limit=50") == KeyEntry("sk-1", 50)
    assert read_entries("k1, k2 rate_limit=3", None) == [KeyEntry("k1"), KeyEntry("k2", 3)]
    with pytest.raises(ValueError, match="unknown API key option 'tpm'"):
        parse_entry("sk-1 tpm=5")
    with pytest.raises(ValueError, match="rate_limit must be a positive integer"):
        parse_entry("sk-1 rate_limit=0")
    with pytest.raises(ValueError, match="listed twice") as twice:
        read_entries("k1, k1 rate_limit=3", None)
    assert "k1" not in str(twice.value)  # never the key
    assert (A.rate_limit, B.rate_limit) == (2, 200)
    assert KEYS.tenant("a") == A and KEYS.tenant("c") is None


def test_a_key_past_its_limit_is_rate_limited_while_others_are_served() -> None:
    cap = _capacity()
    held = [cap.take(A, DEFAULT), cap.take(A, PRIORITY)]
    assert _code(lambda: cap.take(A, DEFAULT)) == "rate_limited"
    assert _code(lambda: cap.take(A, PRIORITY)) == "rate_limited"  # a tier buys no key room
    other = cap.take(B, DEFAULT)
    held[0].release()
    held[0].release()  # twice changes nothing
    held.append(cap.take(A, DEFAULT))
    for place in [*held, other]:
        place.release()
    assert cap.counts() == (0, 0) and cap.lifecycle.in_flight == 0


def test_priority_is_admitted_on_its_reserve_while_default_is_busy() -> None:
    cap = _capacity()
    held = [cap.take(None, DEFAULT) for _ in range(4)]
    assert _code(lambda: cap.take(None, DEFAULT)) == "model_busy"
    held.append(cap.take(None, PRIORITY))  # the reserve: one above the limit
    assert _code(lambda: cap.take(None, PRIORITY)) == "model_busy"
    for place in held:
        place.release()


def test_flex_takes_idle_room_only_and_never_what_default_would_use() -> None:
    async def scenario() -> None:
        cap = _capacity()
        flex = [await cap.wait_flex(None, FLEX, 5) for _ in range(2)]  # its share: 2 of 4
        assert cap.counts() == (0, 2)
        # Default still gets its whole limit with flex running.
        default = [cap.take(None, DEFAULT) for _ in range(4)]
        waiter = asyncio.ensure_future(cap.wait_flex(None, FLEX, 5))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        for place in flex:
            place.release()  # flex's share frees, but default still fills the limit
        await asyncio.sleep(0.3)
        assert not waiter.done()
        default.pop().release()
        place = await asyncio.wait_for(waiter, 1)
        assert cap.counts() == (3, 1)
        for p in [place, *default]:
            p.release()

    asyncio.run(scenario())


def test_flex_waits_in_order_up_to_its_bound_and_leaves_on_disconnect() -> None:
    async def scenario() -> None:
        cap = _capacity()
        default = [cap.take(None, DEFAULT) for _ in range(4)]
        first = asyncio.ensure_future(cap.wait_flex(A, FLEX, 5))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(cap.wait_flex(None, FLEX, 5))
        gone = asyncio.ensure_future(cap.wait_flex(A, FLEX, 5))  # A's second: its limit
        await asyncio.sleep(0.05)
        assert _code(lambda: cap.take(A, DEFAULT)) == "rate_limited"
        gone.cancel()  # the client went away: its key's count comes back at once
        await asyncio.sleep(0.05)
        assert cap._counts[3] == 1
        default.pop().release()
        placed = await asyncio.wait_for(first, 1)  # first come, first served
        await asyncio.sleep(0.3)
        assert not second.done()
        with pytest.raises(APIError) as late:
            await cap.wait_flex(None, FLEX, 0.3)
        assert late.value.status == 429 and late.value.code == "flex_capacity_unavailable"
        placed.release()
        (await asyncio.wait_for(second, 1)).release()
        for p in default:
            p.release()
        assert cap.counts() == (0, 0) and list(cap._counts[3:]) == [0, 0]

    asyncio.run(scenario())


def test_draining_answers_every_flex_waiter_503() -> None:
    async def scenario() -> None:
        cap = _capacity()
        default = [cap.take(None, DEFAULT) for _ in range(4)]
        waiters = [asyncio.ensure_future(cap.wait_flex(None, FLEX, 60)) for _ in range(3)]
        await asyncio.sleep(0.05)
        cap.lifecycle.drain()
        done = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 2)
        assert [(e.status, e.code, e.headers) for e in done] == [  # type: ignore[union-attr]
            (503, "shutting_down", {"Retry-After": "1"})
        ] * 3
        for p in default:
            p.release()
        assert cap.lifecycle.in_flight == 0

    asyncio.run(scenario())
