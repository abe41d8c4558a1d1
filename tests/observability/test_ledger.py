"""The usage ledger's queue on its own, its store a list that can be made to fail: entries are
written in groups, kept and written again while the store fails, forced out oldest first only
by the bound (and counted), and written at shutdown when the store answers; work of a key no
longer configured recorded under its digest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from prometheus_client import REGISTRY

from deepinfra_serve.config.pricing import Pricing, Usage
from deepinfra_serve.http.routes import TABLE
from deepinfra_serve.observability.accounting import account
from deepinfra_serve.observability.ledger import Ledger, LedgerEntry
from deepinfra_serve.observability.record import RequestRecord


class FlakyStore:
    """The store's `write`, as the writer calls it: fails while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.groups: list[list[int]] = []
        self.entries: list[LedgerEntry] = []
        self.attempts = 0

    async def write(self, entries: Sequence[LedgerEntry]) -> None:
        self.attempts += 1
        await asyncio.sleep(0.001)
        if self.down:
            raise ConnectionError("the store is down")
        self.groups.append([e.seq for e in entries])
        self.entries.extend(entries)

    @property
    def written(self) -> list[int]:
        return [seq for group in self.groups for seq in group]


def _add(ledger: Ledger, n: int) -> None:
    for _ in range(n):
        seq = ledger.next_seq()
        ledger.add(
            LedgerEntry(
                ledger.origin, seq, f"r{seq}", "", "m", None, "chat", "default", "http",
                None, 0.0, 1, 0, 1, 1000,
            )
        )  # fmt: skip


def _value(name: str, model: str) -> float:
    return (
        REGISTRY.get_sample_value(f"deepinfra_ledger_records_{name}_total", {"model": model}) or 0
    )


async def test_entries_wait_while_the_store_is_down_and_only_the_bound_drops_them() -> None:
    model = "test/ledger-outage"
    ledger = Ledger(model, max_queued=10)
    store = FlakyStore()
    writer = asyncio.create_task(ledger.run(store.write))
    _add(ledger, 3)
    await asyncio.sleep(0.05)
    assert store.written == [1, 2, 3]  # the first entry woke the writer: written at once
    store.down = True
    _add(ledger, 14)  # 4 more than the bound while nothing can be written
    await asyncio.sleep(0.6)
    assert store.attempts > len(store.groups)  # tried, failed, kept
    assert ledger.queued == 10
    assert _value("dropped", model) == 4
    store.down = False
    for _ in range(100):  # a group being written is off the queue: wait for the store's side
        if len(store.written) == 13:
            break
        await asyncio.sleep(0.05)
    # The oldest four were forced out; the rest written once each, in order.
    assert store.written == [1, 2, 3, *range(8, 18)]
    assert _value("written", model) == 13
    _add(ledger, 2)
    await ledger.close(writer, timeout_s=5)
    assert store.written[-2:] == [18, 19]


async def test_a_busy_server_writes_a_few_large_groups() -> None:
    ledger = Ledger("test/ledger-groups", max_queued=100_000)
    store = FlakyStore()
    writer = asyncio.create_task(ledger.run(store.write))
    started = time.monotonic()
    for _ in range(20):  # 1000 requests ending over about half a second
        _add(ledger, 50)
        await asyncio.sleep(0.025)
    await ledger.close(writer, timeout_s=5)
    elapsed = time.monotonic() - started
    assert store.written == list(range(1, 1001))
    # One group at the first request, then one per interval at most (and one at the close).
    most = 2 + elapsed / Ledger.INTERVAL_S
    assert len(store.groups) <= most, ([len(g) for g in store.groups], elapsed)
    assert len(store.groups) < 20  # never a write per burst, let alone per request


async def test_what_a_shutdown_cannot_write_is_counted_as_dropped() -> None:
    model = "test/ledger-shutdown"
    ledger = Ledger(model, max_queued=100)
    store = FlakyStore()
    store.down = True
    writer = asyncio.create_task(ledger.run(store.write))
    _add(ledger, 5)
    await ledger.close(writer, timeout_s=0.3)
    assert writer.done() and store.written == []
    assert _value("dropped", model) == 5 and ledger.queued == 0


async def test_work_of_a_key_no_longer_configured_is_recorded_under_its_digest() -> None:
    """A batch line or webhook job whose key was removed runs without a tenant; its usage is
    still the key's (its digest from the store), never the open server's."""
    ledger = Ledger("test/ledger-owner", max_queued=10)
    store = FlakyStore()
    writer = asyncio.create_task(ledger.run(store.write))
    record = RequestRecord(
        request_id="r-owner",
        model="test/ledger-owner",
        route=TABLE.classify("POST", "/v1/openai/completions"),
        via="batch",
        owner="digest-of-a-removed-key",
    )
    record.settle(Usage.of(Pricing(input_usd_per_mtok=1, output_usd_per_mtok=2), 2, 3), "length")
    account(record, ledger)
    await ledger.close(writer, timeout_s=5)
    [entry] = store.entries
    assert (entry.request_id, entry.owner, entry.via) == (
        "r-owner",
        "digest-of-a-removed-key",
        "batch",
    )
    assert entry.cost_pico_usd == 8_000_000  # 2 x $1 + 3 x $2 per million tokens
