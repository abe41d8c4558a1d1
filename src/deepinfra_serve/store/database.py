"""The store's database: SQLite in the server's data directory by default, PostgreSQL by URL
for a fleet, through one code path.

SQLAlchemy's Core (not its ORM) writes the SQL for both dialects from one description of the
tables (`tables`), pools the connections and carries the one statement that differs
(PostgreSQL's `FOR UPDATE SKIP LOCKED` when lines are claimed; SQLite, which has one writer at
a time, leaves it out). The drivers are the standard library's sqlite3 and psycopg 3. The
calls are blocking and short; the server runs them on the store's own threads (`Store.call`),
off the event loop, so a slow database never stalls a stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from .tables import MIGRATIONS, schema_version

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SQLITE_FILE = "store.sqlite3"


def database_url(url: str, data_dir: Path) -> str:
    """The URL the store opens: `url` with psycopg as PostgreSQL's driver, or SQLite in
    `data_dir` when `url` is empty."""
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{data_dir / SQLITE_FILE}"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"store_url: SQLite or PostgreSQL, not {parsed.get_backend_name()!r}")
    return parsed.render_as_string(hide_password=False)


class StoreUnavailable(Exception):
    """The database could not be reached or refused a call (the server answers 503)."""


class Store:
    """One database, shared by every API process and replica that names it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        # This process, as the store knows the claims it holds (batch lines, webhook jobs).
        self.runner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._threads = ThreadPoolExecutor(4, thread_name_prefix="store")

    @classmethod
    def open(cls, url: str, data_dir: Path) -> Store:
        """Connect and bring the schema up to date."""
        full = database_url(url, data_dir)
        if full.startswith("sqlite"):
            # Several processes (API processes, a fleet's replicas on one host) share the file:
            # writers wait for each other rather than fail, readers never block writers.
            engine = create_engine(full, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _pragmas(conn: Any, _: Any) -> None:
                cursor = conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        else:
            engine = create_engine(full, pool_size=8, max_overflow=8, pool_pre_ping=True)
        store = cls(engine)
        store.migrate()
        log.info("store: %s", engine.url.render_as_string(hide_password=True))
        return store

    def migrate(self) -> int:
        """Apply the migrations this database lacks; its version after."""
        for attempt in range(10):
            try:
                return self._migrate()
            except OperationalError:
                # Two processes creating the SQLite schema at once: the loser looks again.
                if attempt == 9 or not self.sqlite:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _migrate(self) -> int:
        with self.engine.begin() as conn:
            if not self.sqlite:
                # One migrating replica at a time; the others wait, then find it done.
                conn.execute(text("SELECT pg_advisory_xact_lock(4207114)"))
            schema_version.create(conn, checkfirst=True)
            version = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
            for n in range(version, len(MIGRATIONS)):
                MIGRATIONS[n](conn)
                log.info("store schema: version %d", n + 1)
            if version == 0:
                conn.execute(insert(schema_version).values(version=len(MIGRATIONS)))
            elif version < len(MIGRATIONS):
                conn.execute(update(schema_version).values(version=len(MIGRATIONS)))
            return len(MIGRATIONS)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on one of the store's threads; StoreUnavailable when the
        database fails it (down, unreachable, out of space)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._threads, lambda: fn(*args, **kwargs))
        except (OperationalError, InterfaceError) as exc:
            log.warning("store: %s", exc)
            raise StoreUnavailable(str(exc)) from exc

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        self.engine.dispose()
