"""The Files and Batch APIs' requests and answers, field by field as OpenAI's (DeepInfra's
`OpenAIBatch` and `OpenAIBatchesIn`, with OpenAI's `model` and `usage`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..config.models import RequestModel, ResponseModel

Endpoint = Literal["/v1/chat/completions", "/v1/completions"]
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]

MAX_METADATA_PAIRS = 16


class FileObject(ResponseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None


class FileList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(ResponseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchCreate(RequestModel):
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Endpoint = Field(
        description="The route every line calls: /v1/chat/completions or /v1/completions."
    )
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(
        None, description="Up to 16 pairs; keys up to 64 characters, values up to 512."
    )

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} pairs")
        for k, v in value.items():
            if len(k) > 64 or len(v) > 512:
                raise ValueError("keys are at most 64 characters, values at most 512")
        return value


class RequestCounts(ResponseModel):
    total: int
    completed: int
    failed: int


class InputTokensDetails(ResponseModel):
    cached_tokens: int


class OutputTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class BatchUsage(ResponseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int
    estimated_cost: float = Field(description="USD billed for the lines run, at the batch price.")


class BatchError(ResponseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchOut(ResponseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    usage: BatchUsage


class BatchList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchOut]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
