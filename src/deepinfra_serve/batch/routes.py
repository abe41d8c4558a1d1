"""Handlers of the Batch API (the route table serves them under /v1/openai and /v1). They
run no generation: a batch's lines are run by the replicas that serve its model
(`http.batch_work`), from the store every replica shares."""

from __future__ import annotations

import time
from typing import Any

from ..engine.call import Call
from ..engine.errors import APIError
from ..store import batches, files
from ..store.files import new_id
from .input import Checked, check_lines
from .schema import (
    BatchCreate,
    BatchErrors,
    BatchList,
    BatchOut,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
    RequestCounts,
)
from .services import BatchServices, no_such, owner_of, page_limit


def batch_out(row: batches.BatchRow) -> BatchOut:
    c = row.counts
    return BatchOut(
        id=row.id,
        endpoint=row.endpoint,
        model=row.model or None,
        errors=None if row.errors is None else BatchErrors.model_validate({"data": row.errors}),
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        status=row.status,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        created_at=row.created_at,
        in_progress_at=row.in_progress_at,
        expires_at=row.expires_at,
        finalizing_at=row.finalizing_at,
        completed_at=row.completed_at,
        failed_at=row.failed_at,
        expired_at=row.expired_at,
        cancelling_at=row.cancelling_at,
        cancelled_at=row.cancelled_at,
        request_counts=RequestCounts(total=c.total, completed=c.completed, failed=c.failed),
        metadata=row.metadata,
        usage=BatchUsage(
            input_tokens=c.prompt_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=c.cached_tokens),
            output_tokens=c.completion_tokens,
            output_tokens_details=OutputTokensDetails(),
            total_tokens=c.prompt_tokens + c.completion_tokens,
            estimated_cost=round(c.cost_usd, 12),
        ),
    )


async def create_batch(call: Call[BatchServices, BatchCreate]) -> BatchOut:
    services, req, owner = call.services, call.body, owner_of(call)
    store = services.store
    source = await store.call(files.get, store, owner, req.input_file_id)
    if source is None:
        raise no_such("File", req.input_file_id, "input_file_id")
    if source.purpose != "batch":
        raise APIError(400, "input_file_id: not a file uploaded for `batch`", param="input_file_id")
    batch_id = new_id("batch_")
    now = int(time.time())
    checked = Checked()

    def row() -> batches.BatchRow:
        failed = bool(checked.errors)
        errors = [e.model_dump() for e in checked.errors]
        if checked.more_errors:
            errors.append(
                {
                    "code": "too_many_errors",
                    "message": f"{checked.more_errors} more lines are wrong",
                    "param": None,
                    "line": None,
                }
            )
        return batches.BatchRow(
            id=batch_id,
            owner=owner,
            model=checked.model or "",
            endpoint=req.endpoint,
            input_file_id=req.input_file_id,
            completion_window=req.completion_window,
            status="failed" if failed else "in_progress",
            metadata=req.metadata,
            errors=errors or None,
            output_file_id=None,
            error_file_id=None,
            created_at=now,
            in_progress_at=None if failed else int(time.time()),
            expires_at=now + int(services.settings.batch_window_s),
            finalizing_at=None,
            completed_at=None,
            failed_at=int(time.time()) if failed else None,
            expired_at=None,
            cancelling_at=None,
            cancelled_at=None,
        )

    trace = call.record.trace
    origin = None if trace is None else trace.traceparent()  # its lines' traces link here

    def write() -> batches.BatchRow:
        lines = check_lines(files.lines(store, source.id), req.endpoint, services.check, checked)
        batches.create(store, batch_id, lines, row, origin)
        written = batches.get(store, owner, batch_id)
        assert written is not None
        return written

    return batch_out(await store.call(write))


async def _batch(call: Call[BatchServices, Any]) -> batches.BatchRow:
    store = call.services.store
    batch_id = call.params["batch_id"]
    row = await store.call(batches.get, store, owner_of(call), batch_id)
    if row is None:
        raise no_such("Batch", batch_id, "batch_id")
    return row


async def get_batch(call: Call[BatchServices, None]) -> BatchOut:
    return batch_out(await _batch(call))


async def list_batches(call: Call[BatchServices, None]) -> BatchList:
    store = call.services.store
    limit = page_limit(call.params, 20, 100)
    rows, more = await store.call(
        batches.listed, store, owner_of(call), call.params.get("after"), limit
    )
    data = [batch_out(r) for r in rows]
    return BatchList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )


async def cancel_batch(call: Call[BatchServices, None]) -> BatchOut:
    row = await _batch(call)
    if row.status not in ("validating", "in_progress", "cancelling"):
        raise APIError(
            409,
            f"Cannot cancel a batch with status `{row.status}`",
            param="batch_id",
            code="batch_not_cancellable",
        )
    store = call.services.store
    cancelled = await store.call(batches.cancel, store, owner_of(call), row.id)
    assert cancelled is not None
    return batch_out(cancelled)
