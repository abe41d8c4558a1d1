"""LoRA adapters added at run time: their rows and their files' bytes.

An adapter's PEFT folder is kept in the store, in chunks, so that every replica of its base
serves it after a restart, and none needs the source it came from (a hub token is used once,
never kept). A replica writes the files to its own disk on the adapter's first request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from .database import Store
from .files import CHUNK_BYTES
from .tables import lora_adapter_chunks, lora_adapters


@dataclass(frozen=True, slots=True)
class AdapterRow:
    id: int
    name: str
    base: str
    owner: str
    source: str
    rank: int
    bytes: int
    created_at: int


def _row(r: Row[Any]) -> AdapterRow:
    m = r._mapping
    return AdapterRow(
        m["id"],
        m["name"],
        m["base"],
        m["owner"],
        m["source"],
        m["rank"],
        m["bytes"],
        m["created_at"],
    )


class NameTaken(Exception):
    """Another adapter has this name already."""


class OverBound(Exception):
    """Adding it would pass a bound on adapters (its message names which)."""


def add(
    store: Store,
    *,
    name: str,
    base: str,
    owner: str,
    source: str,
    rank: int,
    files: list[Path],
    max_added: int,
    max_per_key: int,
) -> AdapterRow:
    """Insert the adapter and its files in one transaction, within the bounds on adapters of
    the base (`max_added`) and of one key (`max_per_key`)."""
    size = sum(p.stat().st_size for p in files)
    try:
        with store.engine.begin() as conn:
            counted = select(func.count()).select_from(lora_adapters)
            of_base = counted.where(lora_adapters.c.base == base)
            if conn.execute(of_base).scalar_one() >= max_added:
                raise OverBound("max_added")
            if conn.execute(of_base.where(lora_adapters.c.owner == owner)).scalar_one() >= (
                max_per_key
            ):
                raise OverBound("max_added_per_key")
            values: dict[str, Any] = {
                "name": name,
                "base": base,
                "owner": owner,
                "source": source,
                "rank": rank,
                "bytes": size,
                "created_at": int(time.time()),
            }
            adapter_id = conn.execute(
                insert(lora_adapters).values(**values).returning(lora_adapters.c.id)
            ).scalar_one()
            for path in files:
                with path.open("rb") as f:
                    seq = 0
                    while chunk := f.read(CHUNK_BYTES):
                        conn.execute(
                            insert(lora_adapter_chunks).values(
                                adapter_id=adapter_id, file=path.name, seq=seq, data=chunk
                            )
                        )
                        seq += 1
    except IntegrityError as exc:
        raise NameTaken(name) from exc
    return AdapterRow(adapter_id, name, base, owner, source, rank, size, values["created_at"])


def by_name(store: Store, name: str) -> AdapterRow | None:
    with store.engine.connect() as conn:
        r = conn.execute(select(lora_adapters).where(lora_adapters.c.name == name)).first()
    return None if r is None else _row(r)


def of_base(store: Store, base: str) -> list[AdapterRow]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(lora_adapters).where(lora_adapters.c.base == base).order_by(lora_adapters.c.id)
        ).all()
    return [_row(r) for r in rows]


def remove(store: Store, name: str, owner: str) -> AdapterRow | None:
    """Delete the owner's adapter of that name and its files; None where it has none."""
    with store.engine.begin() as conn:
        r = conn.execute(
            select(lora_adapters).where(
                lora_adapters.c.name == name, lora_adapters.c.owner == owner
            )
        ).first()
        if r is None:
            return None
        row = _row(r)
        conn.execute(delete(lora_adapter_chunks).where(lora_adapter_chunks.c.adapter_id == row.id))
        conn.execute(delete(lora_adapters).where(lora_adapters.c.id == row.id))
    return row


def write_files(store: Store, adapter_id: int, folder: Path) -> None:
    """Write the adapter's files into `folder` (which exists), chunk by chunk."""
    with store.engine.connect() as conn:
        result = conn.execute(
            select(lora_adapter_chunks.c.file, lora_adapter_chunks.c.data)
            .where(lora_adapter_chunks.c.adapter_id == adapter_id)
            .order_by(lora_adapter_chunks.c.file, lora_adapter_chunks.c.seq)
            .execution_options(yield_per=4)
        )
        for name, data in result:
            with (folder / name).open("ab") as f:
                f.write(data)
