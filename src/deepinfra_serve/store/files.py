"""Files: a caller's uploads (a batch's input) and a batch's output and error files.

A file's bytes are kept in the database in chunks of `CHUNK_BYTES`, so that every replica
sharing the store can serve them and none holds a whole file in memory: an upload is written
chunk by chunk as it arrives, a download read chunk by chunk as it is sent. A file is listed
once its last chunk is in (its row is written last).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select

from .database import Store
from .tables import file_chunks, files

CHUNK_BYTES = 1024 * 1024


def new_id(prefix: str) -> str:
    """`prefix` and 24 hex digits, the first 12 the time in milliseconds: ids sort by age,
    which is how lists page (`after`)."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None


def _row(r: Row[Any]) -> FileRow:
    m = r._mapping
    return FileRow(
        m["id"],
        m["owner"],
        m["purpose"],
        m["filename"],
        m["bytes"],
        m["created_at"],
        m["expires_at"],
    )


class Upload:
    """A file being written: chunks go to the store as they fill; `finish` lists it."""

    def __init__(self, store: Store, owner: str, purpose: str, filename: str) -> None:
        self.store = store
        self.id = new_id("file-")
        self.owner, self.purpose, self.filename = owner, purpose, filename
        self.size = 0
        self._seq = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= CHUNK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        chunk = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        seq, self._seq = self._seq, self._seq + 1
        await self.store.call(self._insert_chunk, seq, chunk)

    def _insert_chunk(self, seq: int, chunk: bytes) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(insert(file_chunks).values(file_id=self.id, seq=seq, data=chunk))

    async def finish(self, expires_at: int | None) -> FileRow:
        await self._flush()
        row = FileRow(
            self.id,
            self.owner,
            self.purpose,
            self.filename,
            self.size,
            int(time.time()),
            expires_at,
        )
        await self.store.call(self._insert_row, row)
        return row

    def _insert_row(self, row: FileRow) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(insert(files).values(**_values(row)))

    async def abort(self) -> None:
        self._pending = []
        await self.store.call(delete_chunks, self.store, self.id)


def _values(row: FileRow) -> dict[str, object]:
    return {name: getattr(row, name) for name in FileRow.__slots__}


def delete_chunks(store: Store, file_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(file_chunks).where(file_chunks.c.file_id == file_id))


def write_file(
    conn: Connection,
    owner: str,
    purpose: str,
    filename: str,
    lines: Iterable[bytes],
    expires_at: int | None,
) -> FileRow:
    """A file of `lines` written in the caller's transaction (a batch's output)."""
    file_id = new_id("file-")
    size = seq = 0
    buffer: list[bytes] = []
    held = 0
    for line in lines:
        buffer.append(line)
        held += len(line)
        if held >= CHUNK_BYTES:
            conn.execute(
                insert(file_chunks).values(file_id=file_id, seq=seq, data=b"".join(buffer))
            )
            size, seq, buffer, held = size + held, seq + 1, [], 0
    if buffer:
        conn.execute(insert(file_chunks).values(file_id=file_id, seq=seq, data=b"".join(buffer)))
        size += held
    row = FileRow(file_id, owner, purpose, filename, size, int(time.time()), expires_at)
    conn.execute(insert(files).values(**_values(row)))
    return row


def get(store: Store, owner: str, file_id: str) -> FileRow | None:
    """The caller's file, or None (another key's files are unknown to it)."""
    with store.engine.connect() as conn:
        r = conn.execute(select(files).where(files.c.id == file_id, files.c.owner == owner)).first()
    return None if r is None else _row(r)


def listed(
    store: Store, owner: str, purpose: str | None, after: str | None, limit: int, newest: bool
) -> list[FileRow]:
    q = select(files).where(files.c.owner == owner)
    if purpose is not None:
        q = q.where(files.c.purpose == purpose)
    if after is not None:
        q = q.where(files.c.id < after if newest else files.c.id > after)
    q = q.order_by(files.c.id.desc() if newest else files.c.id).limit(limit)
    with store.engine.connect() as conn:
        return [_row(r) for r in conn.execute(q)]


def remove(store: Store, owner: str, file_id: str) -> bool:
    """Delete the caller's file and its bytes; False if it has none by that id."""
    with store.engine.begin() as conn:
        gone = conn.execute(delete(files).where(files.c.id == file_id, files.c.owner == owner))
        if gone.rowcount == 0:
            return False
        conn.execute(delete(file_chunks).where(file_chunks.c.file_id == file_id))
    return True


def chunk(store: Store, file_id: str, seq: int) -> bytes | None:
    """A file's chunk `seq`, or None past its end."""
    with store.engine.connect() as conn:
        return conn.execute(
            select(file_chunks.c.data).where(
                file_chunks.c.file_id == file_id, file_chunks.c.seq == seq
            )
        ).scalar()


def lines(store: Store, file_id: str) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line without its end) of a file, read a chunk at a time."""
    seq, number, rest = 0, 0, b""
    while (data := chunk(store, file_id, seq)) is not None:
        seq += 1
        parts = (rest + data).split(b"\n")
        rest = parts.pop()
        for part in parts:
            number += 1
            yield number, part
    if rest:
        yield number + 1, rest


def expire(store: Store, now: int) -> int:
    """Delete the files whose time is up; how many."""
    with store.engine.begin() as conn:
        ids = list(
            conn.execute(
                select(files.c.id).where(files.c.expires_at.is_not(None), files.c.expires_at < now)
            ).scalars()
        )
        if ids:
            conn.execute(delete(files).where(files.c.id.in_(ids)))
            conn.execute(delete(file_chunks).where(file_chunks.c.file_id.in_(ids)))
    return len(ids)
