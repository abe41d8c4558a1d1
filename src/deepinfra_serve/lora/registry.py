"""The adapters this server serves under their own names: the card's (fixed for its life) and
those added at run time, which live in the store and are looked up there by name on a miss.

A run-time adapter found in the store is written to this host's data folder once (its PEFT
folder, for the engine's workers to load on its first request) and remembered for
`RECHECK_S`, after which the store is asked again: an adapter deleted through another replica
stops being served here within that time.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from ..config.cards import ModelCard
from ..config.served import ServedAdapter
from ..engine.weights import adapter_path
from ..store import adapters as stored
from ..store.database import Store

RECHECK_S = 5.0
# The engine's ids of run-time adapters: their row's id past this, clear of the card's.
ADDED_IDS = 1_000_000


class Adapters:
    def __init__(self, card: ModelCard, cache_dir: Path, data_dir: Path) -> None:
        self.card = card
        self.folder = data_dir / "adapters"
        lora = card.lora
        self.fixed: dict[str, ServedAdapter] = {}
        if lora is not None:
            for i, a in enumerate(lora.adapters):
                self.fixed[a.name] = ServedAdapter(
                    a.name,
                    i + 1,
                    str(adapter_path(a, cache_dir)),
                    card.pricing.scaled(a.price_multiplier),
                    version=a.served_version,
                )
        self.store: Store | None = None  # set once the store is open
        self._added: dict[str, tuple[ServedAdapter | None, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def takes_added(self) -> bool:
        """Whether adapters can be added at run time: the card has a LoRA section."""
        return self.card.lora is not None

    async def find(self, name: str) -> ServedAdapter | None:
        """The adapter served as `name`, or None."""
        adapter = self.fixed.get(name)
        if adapter is not None or not self.takes_added or self.store is None:
            return adapter
        known = self._added.get(name)
        if known is not None and time.monotonic() - known[1] < RECHECK_S:
            return known[0]
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # one look-up per name at a time, however many requests name it
            known = self._added.get(name)
            if known is not None and time.monotonic() - known[1] < RECHECK_S:
                return known[0]
            adapter = await self._look_up(self.store, name)
            self._added[name] = (adapter, time.monotonic())
            if len(self._added) > 4096:  # names that were never adapters do not pile up
                self._added = {k: v for k, v in self._added.items() if v[0] is not None}
        self._locks.pop(name, None)
        return adapter

    async def _look_up(self, store: Store, name: str) -> ServedAdapter | None:
        row = await store.call(stored.by_name, store, name)
        if row is None or row.base != self.card.name:
            return None
        folder = self.folder / str(row.id)
        if not folder.is_dir():
            await store.call(self._write, store, row.id, folder)
        return self.served(row)

    def served(self, row: stored.AdapterRow) -> ServedAdapter:
        lora = self.card.lora
        assert lora is not None
        return ServedAdapter(
            row.name,
            ADDED_IDS + row.id,
            str(self.folder / str(row.id)),
            self.card.pricing.scaled(lora.price_multiplier),
            owner=row.owner,
        )

    def _write(self, store: Store, adapter_id: int, folder: Path) -> None:
        """The adapter's files from the store into `folder`, which appears whole or not at
        all (API processes and replicas on one host may write it at once)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=".write-") as tmp:
            work = Path(tmp) / "adapter"
            work.mkdir()
            stored.write_files(store, adapter_id, work)
            try:
                work.rename(folder)
            except OSError:
                if not folder.is_dir():
                    raise

    def remember(self, adapter: ServedAdapter) -> None:
        self._added[adapter.name] = (adapter, time.monotonic())

    def forget(self, name: str, adapter_id: int) -> None:
        self._added[name] = (None, time.monotonic())
        shutil.rmtree(self.folder / str(adapter_id), ignore_errors=True)
