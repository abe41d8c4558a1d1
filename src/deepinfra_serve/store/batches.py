"""Batches: created whole with their lines, read, cancelled, expired, and ended once (how
their lines are claimed and run is `claims`).

A batch ends (`finalize`) when none of its lines waits or runs: its
output and error files are written in the same transaction as its last status, so a replica
that dies while finalizing leaves the batch to be finalized again, never half written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, or_, select, update

from .database import Store
from .files import write_file
from .tables import batch_lines, batches

OPEN_LINES = ("waiting", "running")
FAILED_LINES = ("failed", "cancelled", "expired")
_INSERT_ROWS = 1000  # lines per INSERT when a batch is created


@dataclass(slots=True)
class Counts:
    total: int = 0
    completed: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class BatchRow:
    id: str
    owner: str
    model: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    metadata: dict[str, str] | None
    errors: list[dict[str, Any]] | None
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    counts: Counts = field(default_factory=Counts)


@dataclass(frozen=True, slots=True)
class NewLine:
    line: int
    model: str
    custom_id: str
    body: str  # JSON
    order_key: str


def _batch(r: Any) -> BatchRow:
    m = dict(r._mapping)
    m["metadata"] = None if m["metadata"] is None else json.loads(m["metadata"])
    m["errors"] = None if m["errors"] is None else json.loads(m["errors"])
    del m["traceparent"]
    return BatchRow(**m)


def _values(row: BatchRow) -> dict[str, Any]:
    values = {k: getattr(row, k) for k in BatchRow.__slots__ if k != "counts"}
    values["metadata"] = None if row.metadata is None else json.dumps(row.metadata)
    values["errors"] = None if row.errors is None else json.dumps(row.errors)
    return values


class _Refused(Exception):
    pass


def create(
    store: Store,
    batch_id: str,
    lines: Iterable[NewLine],
    then: Callable[[], BatchRow],
    origin: str | None = None,
) -> BatchRow:
    """A batch and all its lines in one transaction, `lines` read as they come (a file of any
    size is never held whole); `then()`, once they are read, is the batch's row. A `failed`
    row (a line was bad) is written without any line. `origin`: the creating request's
    `traceparent`, which its lines' traces link to."""
    try:
        with store.engine.begin() as conn:
            chunk: list[dict[str, Any]] = []
            for line in lines:
                chunk.append(
                    {
                        "batch_id": batch_id,
                        "line": line.line,
                        "model": line.model,
                        "custom_id": line.custom_id,
                        "body": line.body,
                        "order_key": line.order_key,
                        "state": "waiting",
                        "claim": 0,
                    }
                )
                if len(chunk) == _INSERT_ROWS:
                    conn.execute(insert(batch_lines), chunk)
                    chunk = []
            if chunk:
                conn.execute(insert(batch_lines), chunk)
            row = then()
            if row.status == "failed":
                raise _Refused
            conn.execute(insert(batches).values(**_values(row), traceparent=origin))
    except _Refused:
        with store.engine.begin() as conn:
            conn.execute(insert(batches).values(**_values(row), traceparent=origin))
    return row


def _with_counts(conn: Connection, rows: list[BatchRow]) -> list[BatchRow]:
    if not rows:
        return rows
    c = batch_lines.c
    q = (
        select(
            c.batch_id,
            func.count(),
            func.sum(case((c.state == "done", 1), else_=0)),
            func.sum(case((c.state.in_(FAILED_LINES), 1), else_=0)),
            func.sum(c.prompt_tokens),
            func.sum(c.cached_tokens),
            func.sum(c.completion_tokens),
            func.sum(c.cost_usd),
        )
        .where(c.batch_id.in_([r.id for r in rows]))
        .group_by(c.batch_id)
    )
    by_id = {r.id: r for r in rows}
    for batch_id, total, done, failed, prompt, cached, completion, cost in conn.execute(q):
        by_id[batch_id].counts = Counts(
            total,
            int(done or 0),
            int(failed or 0),
            int(prompt or 0),
            int(cached or 0),
            int(completion or 0),
            float(cost or 0.0),
        )
    return rows


def get(store: Store, owner: str | None, batch_id: str) -> BatchRow | None:
    """The batch (the caller's own, unless `owner` is None), with its counts."""
    q = select(batches).where(batches.c.id == batch_id)
    if owner is not None:
        q = q.where(batches.c.owner == owner)
    with store.engine.connect() as conn:
        r = conn.execute(q).first()
        return None if r is None else _with_counts(conn, [_batch(r)])[0]


def listed(store: Store, owner: str, after: str | None, limit: int) -> tuple[list[BatchRow], bool]:
    """The caller's batches, newest first, older than `after`; and whether more follow."""
    q = select(batches).where(batches.c.owner == owner)
    if after is not None:
        q = q.where(batches.c.id < after)
    q = q.order_by(batches.c.id.desc()).limit(limit + 1)
    with store.engine.connect() as conn:
        rows = [_batch(r) for r in conn.execute(q)]
        more = len(rows) > limit
        return _with_counts(conn, rows[:limit]), more


def cancel(store: Store, owner: str, batch_id: str) -> BatchRow | None:
    """Move a live batch to `cancelling`: its waiting lines end as cancelled now, its running
    ones when their runners see it. Answers the batch as it is after (ended ones unchanged)."""
    now = int(time.time())
    with store.engine.begin() as conn:
        moved = conn.execute(
            update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.owner == owner,
                batches.c.status.in_(("validating", "in_progress")),
            )
            .values(status="cancelling", cancelling_at=now)
        )
        if moved.rowcount:
            conn.execute(
                update(batch_lines)
                .where(batch_lines.c.batch_id == batch_id, batch_lines.c.state == "waiting")
                .values(state="cancelled")
            )
    return get(store, owner, batch_id)


def expire(store: Store, now: int) -> list[str]:
    """Batches past their window: their waiting lines end as expired, those running are
    stopped by their runners and end so too; the batch ends `expired` once none runs."""
    c = batch_lines.c
    with store.engine.begin() as conn:
        ids = list(
            conn.execute(
                select(batches.c.id).where(
                    batches.c.status == "in_progress",
                    batches.c.expired_at.is_(None),
                    batches.c.expires_at <= now,
                )
            ).scalars()
        )
        if ids:
            conn.execute(update(batches).where(batches.c.id.in_(ids)).values(expired_at=now))
            conn.execute(
                update(batch_lines)
                .where(c.batch_id.in_(ids), c.state == "waiting")
                .values(state="expired")
            )
    return ids


def ready_to_end(store: Store) -> list[str]:
    """Live batches none of whose lines waits or runs (and finalizing ones left by a replica
    that died while it wrote them)."""
    c = batch_lines.c
    # Per batch, through the (batch_id, state) index: no scan of every open line.
    open_line = (
        select(c.line).where(c.batch_id == batches.c.id, c.state.in_(OPEN_LINES)).limit(1).exists()
    )
    stale = int(time.time()) - 60
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                select(batches.c.id).where(
                    or_(
                        and_(batches.c.status.in_(("in_progress", "cancelling")), ~open_line),
                        and_(batches.c.status == "finalizing", batches.c.finalizing_at < stale),
                    )
                )
            ).scalars()
        )


Unrun = Callable[[str, str], str]  # (state, custom_id) -> the error file's line of a line not run


def finalize(store: Store, batch_id: str, output_ttl_s: int, unrun: Unrun) -> bool:
    """End a batch: write its output and error files and its final status, at once; `unrun`
    writes the error line of each line that never ran (cancelled, expired). Whether this call
    ended it (another replica may have)."""
    now = int(time.time())
    with store.engine.begin() as conn:
        moved = conn.execute(
            update(batches)
            .where(
                batches.c.id == batch_id,
                or_(
                    batches.c.status.in_(("in_progress", "cancelling")),
                    and_(batches.c.status == "finalizing", batches.c.finalizing_at < now - 60),
                ),
            )
            .values(status="finalizing", finalizing_at=now)
        )
    if not moved.rowcount:
        return False
    with store.engine.begin() as conn:
        row = _batch(conn.execute(select(batches).where(batches.c.id == batch_id)).one())
        if row.status != "finalizing" or row.finalizing_at != now:
            return False  # another replica took it over meanwhile
        expires = now + output_ttl_s
        output = _lines(conn, batch_id, ("done",), unrun)
        errors = _lines(conn, batch_id, FAILED_LINES, unrun)
        out_file = err_file = None
        if _any(conn, batch_id, ("done",)):
            out_file = write_file(
                conn, row.owner, "batch_output", f"{batch_id}_output.jsonl", output, expires
            ).id
        if _any(conn, batch_id, FAILED_LINES):
            err_file = write_file(
                conn, row.owner, "batch_output", f"{batch_id}_error.jsonl", errors, expires
            ).id
        if row.cancelling_at is not None:
            end = {"status": "cancelled", "cancelled_at": now}
        elif row.expired_at is not None:
            end = {"status": "expired"}
        else:
            end = {"status": "completed", "completed_at": now}
        conn.execute(
            update(batches)
            .where(batches.c.id == batch_id)
            .values(output_file_id=out_file, error_file_id=err_file, **end)
        )
    return True


def _any(conn: Connection, batch_id: str, states: tuple[str, ...]) -> bool:
    c = batch_lines.c
    q = select(c.line).where(c.batch_id == batch_id, c.state.in_(states)).limit(1)
    return conn.execute(q).first() is not None


def _lines(
    conn: Connection, batch_id: str, states: tuple[str, ...], unrun: Unrun
) -> Iterator[bytes]:
    """The file's lines in input order, read a page at a time."""
    c = batch_lines.c
    last = 0
    while True:
        page = conn.execute(
            select(c.line, c.state, c.custom_id, c.result)
            .where(c.batch_id == batch_id, c.state.in_(states), c.line > last)
            .order_by(c.line)
            .limit(500)
        ).all()
        if not page:
            return
        for line, state, custom_id, result in page:
            last = line
            if result is None:
                result = unrun(state, custom_id)
            yield result.encode() + b"\n"


def open_lines(store: Store, model: str) -> tuple[int, int, float | None]:
    """(waiting, running, created_at of the oldest batch with a waiting line) for `model`."""
    c = batch_lines.c
    with store.engine.connect() as conn:
        counts: dict[str, int] = dict(
            conn.execute(
                select(c.state, func.count())
                .where(c.model == model, c.state.in_(OPEN_LINES))
                .group_by(c.state)
            ).all()
        )
        oldest = conn.execute(
            select(func.min(batches.c.created_at)).where(
                batches.c.id.in_(
                    select(c.batch_id).where(c.model == model, c.state == "waiting").distinct()
                ),
            )
        ).scalar()
    return counts.get("waiting", 0), counts.get("running", 0), oldest


def by_status(store: Store, model: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        return dict(
            conn.execute(
                select(batches.c.status, func.count())
                .where(batches.c.model == model)
                .group_by(batches.c.status)
            ).all()
        )
