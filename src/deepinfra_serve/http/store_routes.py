"""The routes on the store: the Files and Batch APIs', and the account's (its rate limit, its
requests' costs, its usage by day). Part of the route table (`routes.ROUTES`)."""

from __future__ import annotations

from typing import Any

from ..batch import file_routes
from ..batch import routes as batch
from ..batch.schema import BatchCreate, BatchList, BatchOut, FileDeleted, FileList, FileObject
from ..usage import routes as usage
from ..usage.schema import RequestCostQuery, RequestCostResponse, UsageOut
from . import account
from .families import ACCOUNT, OPENAI
from .route_table import Route

# The Files and Batch APIs' routes. Those admitted have a body read whole and bounded (or
# answer raw bytes) and are refused while draining; none takes a place in the model's capacity.
_STORED: dict[str, Any] = {"store": True, "auth": ("authorization",)}
_STORED_ADMITTED: dict[str, Any] = {**_STORED, "admitted": True, "holds_place": False}

STORE_ROUTES = (
    Route(
        OPENAI,
        "POST",
        "/files",
        file_routes.upload_file,
        FileObject,
        "Upload a file (multipart: `file`, `purpose: batch`, optional `expires_after`), "
        "streamed to the store; past the size bound: 413.",
        label="files",
        upload=True,
        errors=(400, 401, 413),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/files",
        file_routes.list_files,
        FileList,
        "The caller's files (`purpose`, `after`, `limit`, `order`).",
        label="files",
        query=("purpose", "after", "limit", "order"),
        errors=(400, 401),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/files/{file_id}",
        file_routes.get_file,
        FileObject,
        "One of the caller's files.",
        label="files",
        errors=(401, 404),
        **_STORED,
    ),
    Route(
        OPENAI,
        "DELETE",
        "/files/{file_id}",
        file_routes.delete_file,
        FileDeleted,
        "Delete one of the caller's files.",
        label="files",
        errors=(401, 404),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/files/{file_id}/content",
        file_routes.file_content,
        FileObject,
        "A file's bytes (a batch's output: one JSON line per request).",
        label="files",
        raw="application/jsonl",
        errors=(401, 404, 503),
        **_STORED_ADMITTED,
    ),
    Route(
        OPENAI,
        "POST",
        "/batches",
        batch.create_batch,
        BatchOut,
        "Create a batch from an uploaded JSONL file; its lines are checked at once (a bad "
        "one fails the batch, its `errors` naming the line and field).",
        body=BatchCreate,
        label="batches",
        errors=(400, 401, 404, 413, 422, 503),
        **_STORED_ADMITTED,
    ),
    Route(
        OPENAI,
        "GET",
        "/batches",
        batch.list_batches,
        BatchList,
        "The caller's batches, newest first (`after`, `limit`).",
        label="batches",
        query=("after", "limit"),
        errors=(400, 401),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/batches/{batch_id}",
        batch.get_batch,
        BatchOut,
        "One of the caller's batches.",
        label="batches",
        errors=(401, 404),
        **_STORED,
    ),
    Route(
        OPENAI,
        "POST",
        "/batches/{batch_id}/cancel",
        batch.cancel_batch,
        BatchOut,
        "Cancel a batch: lines running are stopped, finished ones kept, the rest end as "
        "`batch_cancelled`.",
        label="batches",
        errors=(401, 404, 409),
        **_STORED,
    ),
    Route(
        ACCOUNT,
        "GET",
        "/me/rate_limit",
        account.rate_limit,
        account.RateLimitOut,
        "The caller's limits on this model: concurrent requests (`rate_limit`); "
        "`tpm_rate_limit` 0: tokens per minute are not limited.",
        auth=("authorization", "x-api-key"),
        errors=(401,),
    ),
    Route(
        ACCOUNT,
        "POST",
        "/request-costs",
        usage.request_costs,
        RequestCostResponse,
        "What the caller's past requests cost, in nano-USD, by any id the request was answered "
        "with; ids of no request of the caller's are left out.",
        body=RequestCostQuery,
        label="usage",
        admitted=True,
        holds_place=False,
        errors=(401, 404, 422, 503),
        **_STORED,
    ),
    Route(
        ACCOUNT,
        "GET",
        "/me/usage",
        usage.my_usage,
        UsageOut,
        "The caller's usage by day (UTC), model and tier, `from` to `to` (YYYY-MM-DD, both "
        "included; default: the last 30 days).",
        label="usage",
        query=("from", "to"),
        errors=(400, 401, 404, 503),
        **_STORED,
    ),
)
