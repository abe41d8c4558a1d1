"""Handlers of the Files API (`/v1/openai/files...`): uploads streamed to the store, and a
batch's output and error files read back from it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..engine.call import BodyStream, Call
from ..engine.errors import APIError
from ..engine.generation import Raw
from ..store import files
from ..store.files import FileRow, Upload
from .schema import FileDeleted, FileList, FileObject
from .services import BatchServices, no_such, owner_of, page_limit
from .upload import receive_file

PURPOSES = ("batch",)  # what an upload may be for here
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 24 * 3600  # OpenAI's bounds on `expires_after`


def file_object(row: FileRow) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
    )


async def upload_file(call: Call[BatchServices, BodyStream]) -> FileObject:
    services = call.services
    upload = Upload(services.store, owner_of(call), "batch", "")
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
    limit = page_limit(params, 10_000, 10_000)
    store = call.services.store
    rows = await store.call(
        files.listed,
        store,
        owner_of(call),
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
    row = await store.call(files.get, store, owner_of(call), file_id)
    if row is None:
        raise no_such("File", file_id, "file_id")
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
    if not await store.call(files.remove, store, owner_of(call), file_id):
        raise no_such("File", file_id, "file_id")
    return FileDeleted(id=file_id, deleted=True)
