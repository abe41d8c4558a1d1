"""The store's tables, and the versions of its schema.

`MIGRATIONS[n]` takes a database at version n to n + 1; `Store.open` applies the ones a
database lacks, in one transaction each, so that every replica of a fleet starts on the same
schema whichever started first.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

# A file's metadata; its bytes are in `file_chunks`.
files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),  # the API key's digest; "" on an open server
    Column("purpose", String(32), nullable=False),
    Column("filename", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Index("files_by_owner", "owner", "created_at"),
)

file_chunks = Table(
    "file_chunks",
    metadata,
    Column("file_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("model", Text, nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Text),  # JSON
    Column("errors", Text),  # JSON: OpenAI's `errors` list
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("created_at", BigInteger, nullable=False),
    Column("in_progress_at", BigInteger),
    Column("expires_at", BigInteger, nullable=False),
    Column("finalizing_at", BigInteger),
    Column("completed_at", BigInteger),
    Column("failed_at", BigInteger),
    Column("expired_at", BigInteger),
    Column("cancelling_at", BigInteger),
    Column("cancelled_at", BigInteger),
    Column("traceparent", String(64)),  # the creating request's span, for its lines' traces
    Index("batches_by_owner", "owner", "id"),
    Index("batches_by_status", "status"),
)

# One line of a batch's input, and once run, its result line. `state`: waiting, running
# (claimed by `runner` until `lease_until`), done, failed, cancelled or expired.
batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line", Integer, primary_key=True),  # its number in the input file, from 1
    Column("model", Text, nullable=False),
    Column("custom_id", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("order_key", String(64), nullable=False),  # lines sharing a prompt prefix sort together
    Column("state", String(16), nullable=False),
    Column("runner", String(64)),
    Column("claim", Integer, nullable=False, default=0),  # claims so far: whose result counts
    Column("lease_until", Float),
    Column("result", Text),  # the output or error file's line
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Index("batch_lines_to_claim", "model", "state", "batch_id", "order_key", "line"),
    Index("batch_lines_by_state", "batch_id", "state"),
)

# A native request answered `queued`, kept until its webhook is delivered (or given up on).
webhook_jobs = Table(
    "webhook_jobs",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("model", Text, nullable=False),
    Column("path", Text, nullable=False),  # the model as the request named it
    Column("body", Text, nullable=False),  # the request's body, without its webhook
    Column("webhook", Text, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("runner", String(64)),
    Column("lease_until", Float),
    Column("created_at", BigInteger, nullable=False),
    Column("traceparent", String(64)),  # the accepting request's span, for the job's trace
    Index("webhook_jobs_to_claim", "model", "lease_until"),
)


# A LoRA adapter added at run time (`POST /lora-model`): served by every replica of its base.
lora_adapters = Table(
    "lora_adapters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # the engine's id for it
    Column("name", String(256), nullable=False, unique=True),
    Column("base", Text, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("source", Text, nullable=False),  # where its weights came from
    Column("rank", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("lora_adapters_by_base", "base", "owner"),
)

# Its PEFT folder's files, in chunks (a replica writes them to its disk on first use).
lora_adapter_chunks = Table(
    "lora_adapter_chunks",
    metadata,
    Column("adapter_id", Integer, primary_key=True),
    Column("file", String(128), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)


# One billed request, as its client saw it billed (`observability.ledger`): kept for the
# operator's retention (`usage_retention_days`). (origin, seq) names the entry once whatever
# number of times a writer retries it: a retried write adds nothing.
usage_requests = Table(
    "usage_requests",
    metadata,
    Column("origin", String(32), primary_key=True),  # the process that billed it
    Column("seq", BigInteger, primary_key=True),
    Column("request_id", String(128), nullable=False),  # its id (X-Request-ID, `request_id`)
    Column("owner", String(64), nullable=False),  # the API key's digest; "" on an open server
    Column("model", String(256), nullable=False),  # the card's model
    Column("adapter", String(256)),  # the LoRA adapter it was served through, if any
    Column("api", String(32), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("via", String(16), nullable=False),  # http, background (a webhook job) or batch
    Column("batch_id", String(64)),
    Column("created_at", Float, nullable=False),  # when it ended, in seconds since the epoch
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cost_pico_usd", BigInteger, nullable=False),  # its `estimated_cost`, exactly
    Index("usage_requests_by_owner", "owner", "request_id"),
    Index("usage_requests_by_time", "created_at"),
)

# What each key used, one row per day (UTC), model, adapter and tier: the invoice's lines,
# added to in the same transaction as the request rows and kept after them.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD
    Column("owner", String(64), primary_key=True),
    Column("model", String(256), primary_key=True),
    Column("adapter", String(256), primary_key=True),  # "" for the model itself
    Column("tier", String(16), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cost_pico_usd", BigInteger, nullable=False),
    Index("usage_daily_by_owner", "owner", "day"),
)


def _version_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[files, file_chunks, batches, batch_lines, webhook_jobs])


def _version_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[lora_adapters, lora_adapter_chunks])


def _version_3(conn: Connection) -> None:
    metadata.create_all(conn, tables=[usage_requests, usage_daily])


def _version_4(conn: Connection) -> None:
    """The `traceparent` that work from the store links its trace to. Version 1 creates the
    tables as they are declared now, with the column; a database made before has it added."""
    for table in (batches, webhook_jobs):
        columns = {c["name"] for c in inspect(conn).get_columns(table.name)}
        if "traceparent" not in columns:
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN traceparent VARCHAR(64)"))


MIGRATIONS: list[Callable[[Connection], None]] = [_version_1, _version_2, _version_3, _version_4]
