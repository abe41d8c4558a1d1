"""Handlers of the Files and Batch APIs (the route table serves them under /v1/openai and
/v1). They run no generation: a batch's lines are run by the replicas that serve its model
(`http.batch_work`), from the store every replica shares."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..config.settings import ServerSettings
from ..engine.call import BodyStream, Call
from ..engine.errors import APIError
from ..engine.generation import Raw
from ..store import batches, files
from ..store.database import Store
from ..store.files import FileRow, Upload, new_id
from .input import Checked, LineCheck, check_lines
from .schema import (
    BatchCreate,
    BatchErrors,
    BatchList,
    BatchOut,
    BatchUsage,
    FileDeleted,
    FileList,
    FileObject,
    InputTokensDetails,
    OutputTokensDetails,
    RequestCounts,
)
from .upload import receive_file

PURPOSES = ("batch",)  # what an upload may be for here
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 24 * 3600  # OpenAI's bounds on `expires_after`


@dataclass(frozen=True)
class BatchServices:
    store: Store
    settings: ServerSettings
    check: LineCheck  # a line's body, as its route's schema and the served models take it


def _owner(call: Call[Any, Any]) -> str:
    """Whose files and batches: the API key's digest ("" on an open server, one tenant)."""
    return "" if call.tenant is None else call.tenant.owner


def _no_such(kind: str, what: str, param: str) -> APIError:
    return APIError(404, f"No such {kind} object: {what}", param=param, code="not_found")


def file_object(row: FileRow) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
    )


def _limit(params: Mapping[str, str], default: int, most: int) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise APIError(400, f"limit: an integer from 1 to {most}", param="limit")
    return int(raw)


async def upload_file(call: Call[BatchServices, BodyStream]) -> FileObject:
    services = call.services
    upload = Upload(services.store, _owner(call), "batch", "")
    try:
        form = await receive_file(call.body, upload, services.settings.max_file_bytes)
        purpose = form.fields.get("purpose")
        if purpose not in PURPOSES:
            raise APIError(400, "purpose: must be `batch`", param="purpose", code="invalid_value")
        expires_at = _expires_at(form.fields)
        upload.filename = form.filename or "upload.jsonl"
        return file_object(await upload.finish(expires_at))
    except BaseException:
        await upload.abort()
        raise


def _expires_at(fields: Mapping[str, str]) -> int | None:
    """OpenAI's `expires_after[anchor]=created_at` and `expires_after[seconds]`; none: kept."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise APIError(400, "expires_after.anchor: must be `created_at`", param="expires_after")
    if (
        seconds is None
        or not seconds.isdigit()
        or not (MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S)
    ):
        raise APIError(
            400,
            f"expires_after.seconds: from {MIN_EXPIRY_S} to {MAX_EXPIRY_S}",
            param="expires_after",
        )
    return int(time.time()) + int(seconds)


async def list_files(call: Call[BatchServices, None]) -> FileList:
    params = call.params
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise APIError(400, "order: asc or desc", param="order")
    limit = _limit(params, 10_000, 10_000)
    store = call.services.store
    rows = await store.call(
        files.listed,
        store,
        _owner(call),
        params.get("purpose"),
        params.get("after"),
        limit + 1,
        order == "desc",
    )
    data = [file_object(r) for r in rows[:limit]]
    return FileList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=len(rows) > limit,
    )


async def _file(call: Call[BatchServices, Any]) -> FileRow:
    store = call.services.store
    file_id = call.params["file_id"]
    row = await store.call(files.get, store, _owner(call), file_id)
    if row is None:
        raise _no_such("File", file_id, "file_id")
    return row


async def get_file(call: Call[BatchServices, None]) -> FileObject:
    return file_object(await _file(call))


async def file_content(call: Call[BatchServices, None]) -> Raw:
    row = await _file(call)
    store = call.services.store

    async def chunks() -> AsyncIterator[bytes]:
        seq = 0
        while (data := await store.call(files.chunk, store, row.id, seq)) is not None:
            yield data
            seq += 1

    return Raw(
        "application/jsonl" if row.filename.endswith(".jsonl") else "application/octet-stream",
        chunks(),
    )


async def delete_file(call: Call[BatchServices, None]) -> FileDeleted:
    store = call.services.store
    file_id = call.params["file_id"]
    if not await store.call(files.remove, store, _owner(call), file_id):
        raise _no_such("File", file_id, "file_id")
    return FileDeleted(id=file_id, deleted=True)


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
    services, req, owner = call.services, call.body, _owner(call)
    store = services.store
    source = await store.call(files.get, store, owner, req.input_file_id)
    if source is None:
        raise _no_such("File", req.input_file_id, "input_file_id")
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

    def write() -> batches.BatchRow:
        lines = check_lines(files.lines(store, source.id), req.endpoint, services.check, checked)
        batches.create(store, batch_id, lines, row)
        written = batches.get(store, owner, batch_id)
        assert written is not None
        return written

    return batch_out(await store.call(write))


async def _batch(call: Call[BatchServices, Any]) -> batches.BatchRow:
    store = call.services.store
    batch_id = call.params["batch_id"]
    row = await store.call(batches.get, store, _owner(call), batch_id)
    if row is None:
        raise _no_such("Batch", batch_id, "batch_id")
    return row


async def get_batch(call: Call[BatchServices, None]) -> BatchOut:
    return batch_out(await _batch(call))


async def list_batches(call: Call[BatchServices, None]) -> BatchList:
    store = call.services.store
    limit = _limit(call.params, 20, 100)
    rows, more = await store.call(
        batches.listed, store, _owner(call), call.params.get("after"), limit
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
    cancelled = await store.call(batches.cancel, store, _owner(call), row.id)
    assert cancelled is not None
    return batch_out(cancelled)
