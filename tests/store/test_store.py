"""The store on both of its databases, SQLite and the session's PostgreSQL: the schema applied
once whoever opens it first, claims and leases that let a line be written (and billed) by one
run only, the usage ledger's entries added once however often written, and a database that
cannot be reached said as such."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from deepinfra_serve.observability.ledger import LedgerEntry
from deepinfra_serve.store import batches, claims, files, usage, webhook_jobs
from deepinfra_serve.store.batches import BatchRow, NewLine
from deepinfra_serve.store.claims import LineResult
from deepinfra_serve.store.database import Store, StoreUnavailable, database_url
from deepinfra_serve.store.tables import MIGRATIONS, schema_version
from deepinfra_serve.store.webhook_jobs import WebhookJob
from deepinfra_serve.usage.report import render

from ..helpers import free_port, postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = Store.open("", tmp_path)
    else:
        if postgres_url is None:
            pytest.skip("Debian's postgresql is not installed here")
        opened = Store.open(postgres_database(postgres_url, "store_tests"), tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def _batch(store: Store, n: int, batch_id: str = "t-batch", origin: str | None = None) -> BatchRow:
    now = int(time.time())
    row = BatchRow(
        id=batch_id,
        owner="t-owner",
        model="m",
        endpoint="/v1/completions",
        input_file_id="t-file",
        completion_window="24h",
        status="in_progress",
        metadata=None,
        errors=None,
        output_file_id=None,
        error_file_id=None,
        created_at=now,
        in_progress_at=now,
        expires_at=now + 60,
        finalizing_at=None,
        completed_at=None,
        failed_at=None,
        expired_at=None,
        cancelling_at=None,
        cancelled_at=None,
    )
    lines = (NewLine(i, "m", f"c{i}", "{}", f"k{i % 2}") for i in range(1, n + 1))
    return batches.create(store, batch_id, lines, lambda: row, origin)


def test_the_schema_is_applied_once_by_whoever_opens_first(store: Store, tmp_path: Path) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    with ThreadPoolExecutor(4) as pool:
        others = list(pool.map(lambda _: Store.open(url, tmp_path), range(4)))
    with store.engine.connect() as conn:
        versions = conn.execute(select(func.count(), func.max(schema_version.c.version))).one()
    assert tuple(versions) == (1, len(MIGRATIONS))
    assert {s.migrate() for s in others} == {len(MIGRATIONS)}
    for other in others:
        other.close()


def test_a_store_of_version_3_gains_the_traceparent_its_work_links_to(
    store: Store, tmp_path: Path
) -> None:
    """Batches and webhook jobs keep their creating request's `traceparent` (version 4); a
    store made before it gains the column, and the claims hand it to their runs."""
    with store.engine.begin() as conn:
        for table in ("batches", "webhook_jobs"):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN traceparent"))
        conn.execute(update(schema_version).values(version=3))
    url = store.engine.url.render_as_string(hide_password=False)
    again = Store.open(url, tmp_path)
    try:
        assert again.migrate() == len(MIGRATIONS) == 4
        origin = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        _batch(again, 1, "traced-batch", origin)
        [line] = claims.claim(again, "m", "a", 1, lease_s=60)
        assert (line.batch_id, line.origin) == ("traced-batch", origin)
        job = WebhookJob("traced-job", "m", "o/m", "{}", "http://127.0.0.2/", "", "default", origin)
        webhook_jobs.keep(again, job, "a", lease_s=-1)
        assert webhook_jobs.claim(again, "m", "b", 1, lease_s=60) == [job]
    finally:
        again.close()


def test_a_line_is_written_by_its_latest_claim_only(store: Store) -> None:
    _batch(store, 3)
    first = claims.claim(store, "m", "a", 3, lease_s=-1)  # a lease already run out
    assert sorted(c.line for c in first) == [1, 2, 3]
    second = claims.claim(store, "m", "b", 3, lease_s=60)  # taken over: a's runner "died"
    assert len(second) == 3 and {c.claim for c in second} == {2}
    assert claims.claim(store, "m", "c", 3, lease_s=60) == []  # b's lease holds
    done = LineResult("done", "{}", 1, 0, 1, 0.5)
    assert not claims.finish(store, first[0], done)  # a's late result is dropped, unbilled
    assert all(claims.finish(store, c, done) for c in second)
    row = batches.get(store, "t-owner", "t-batch")
    assert row is not None and row.counts.completed == 3 and row.counts.cost_usd == 1.5
    assert batches.ready_to_end(store) == ["t-batch"]
    unrun = lambda state, custom_id: "{}"  # noqa: E731
    assert batches.finalize(store, "t-batch", 60, unrun)
    assert not batches.finalize(store, "t-batch", 60, unrun)  # ended once
    ended = batches.get(store, "t-owner", "t-batch")
    assert ended is not None and ended.status == "completed" and ended.error_file_id is None
    assert [n for n, _ in files.lines(store, ended.output_file_id or "")] == [1, 2, 3]
    assert batches.get(store, "another-owner", "t-batch") is None


def test_lines_handed_back_run_again_at_once(store: Store) -> None:
    _batch(store, 2)
    claimed = claims.claim(store, "m", "a", 2, lease_s=600)
    claims.hand_back(store, "a", [(c.batch_id, c.line) for c in claimed])
    again = claims.claim(store, "m", "b", 2, lease_s=600)
    assert sorted(c.line for c in again) == [1, 2] and {c.claim for c in again} == {2}


def test_a_database_that_cannot_be_reached_is_said_as_such(tmp_path: Path) -> None:
    url = database_url(f"postgresql://postgres@127.0.0.1:{free_port()}/none", tmp_path)
    from sqlalchemy import create_engine

    unreachable = Store(create_engine(url))
    with pytest.raises(StoreUnavailable):
        asyncio.run(unreachable.call(files.get, unreachable, "", "file-x"))
    unreachable.close()


def _entry(seq: int, request_id: str, owner: str = "k1", **fields: Any) -> LedgerEntry:
    values: dict[str, Any] = {
        "origin": "o1",
        "seq": seq,
        "request_id": request_id,
        "owner": owner,
        "model": "m",
        "adapter": None,
        "api": "chat",
        "tier": "default",
        "via": "http",
        "batch_id": None,
        "created_at": DAY_1 + seq,
        "prompt_tokens": 10,
        "cached_tokens": 4,
        "completion_tokens": 5,
        "cost_pico_usd": 1_234_567,
        **fields,
    }
    return LedgerEntry(**values)


DAY_1 = datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp()


def test_the_ledger_adds_each_entry_once_to_its_day(store: Store) -> None:
    group = [
        _entry(1, "r1"),
        _entry(2, "r2", tier="flex", cost_pico_usd=500),
        _entry(3, "r3", adapter="o/lora", created_at=DAY_1 + 86400),
        _entry(4, "r1", owner="k2", cost_pico_usd=9),  # another key, the same client id
    ]
    assert usage.write(store, group) == 4
    # Written again (its first answer lost): nothing is added twice.
    assert usage.write(store, [*group, _entry(5, "r5")]) == 1
    days = usage.daily(store, date(2026, 12, 1), date(2026, 12, 2))
    summary = {(d.day, d.owner, d.served_as, d.tier): (d.requests, d.cost_pico_usd) for d in days}
    assert summary == {
        ("2026-12-01", "k1", "m", "default"): (2, 2_469_134),
        ("2026-12-01", "k1", "m", "flex"): (1, 500),
        ("2026-12-01", "k2", "m", "default"): (1, 9),
        ("2026-12-02", "k1", "o/lora", "default"): (1, 1_234_567),
    }
    assert [d.day for d in usage.daily(store, date(2026, 12, 2), date(2026, 12, 2), "k1")] == [
        "2026-12-02"
    ]
    # The operator's report, exact to 1e-12 USD, in either format.
    as_json = json.loads(render(days, "json"))
    as_csv = list(csv.DictReader(io.StringIO(render(days, "csv"))))
    for rows in (as_json, as_csv):
        assert [(r["key"], r["model"], r["cost_usd"]) for r in rows] == [
            ("k1", "m", "0.000002469134"),
            ("k1", "m", "0.000000000500"),
            ("k2", "m", "0.000000000009"),
            ("k1", "o/lora", "0.000001234567"),
        ]
    # By any id a client saw; another key's ids are unknown, never priced.
    asked = ["r1", "chatcmpl-r2", "msg_r3", "batch_req_r5", "cmpl-nothing", "r4"]
    assert usage.costs(store, "k1", asked) == {
        "r1": 1_234_567,
        "chatcmpl-r2": 500,
        "msg_r3": 1_234_567,
        "batch_req_r5": 1_234_567,
    }
    assert usage.costs(store, "k2", ["r1", "r2"]) == {"r1": 9}
    # Past the retention the request rows go; the daily rows stay.
    assert usage.purge(store, 30, now=DAY_1 + 30 * 86400 + 4.5) == 3
    assert usage.costs(store, "k1", ["r1", "chatcmpl-r2", "msg_r3"]) == {"msg_r3": 1_234_567}
    assert usage.daily(store, date(2026, 12, 1), date(2026, 12, 2)) == days
