"""The audit log: an SQLite file (WAL, synchronous=FULL) of connections, order requests and the kill switch.

The gate writes it on one background thread, so a commit's fsync never stalls the relay, and
waits for an order's row to be committed before the order goes on to the gateway: a gate killed
at any moment has logged every order it forwarded. `ibgw audit` reads it.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

UTC = timezone.utc  # datetime.UTC is Python 3.11+; hosts may run 3.10 (Ubuntu 22.04)

if TYPE_CHECKING:
    from .orders import OrderRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS connections (
    id INTEGER PRIMARY KEY,
    app TEXT,                      -- NULL when the client id is not registered
    client_id INTEGER NOT NULL,
    source TEXT NOT NULL,          -- the app's address (from the PROXY header when the front sends one)
    version INTEGER NOT NULL,      -- negotiated server version
    started TEXT NOT NULL,         -- UTC, ISO 8601
    ended TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused')),
    reason TEXT,                   -- why it was refused, or how it ended
    cert_serial TEXT               -- front.tls: the serial (hex) of the app's client certificate
);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    connection_id INTEGER NOT NULL REFERENCES connections(id),
    app TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    request TEXT NOT NULL,         -- placeOrder | cancelOrder | reqGlobalCancel | exerciseOptions
    order_id INTEGER,
    symbol TEXT,
    sec_type TEXT,
    action TEXT,
    quantity TEXT,
    order_type TEXT,
    limit_price REAL,
    -- forwarding: committed before the bytes go out (they may not have); forwarded: written
    decision TEXT NOT NULL CHECK (decision IN ('forwarding', 'forwarded', 'refused')),
    reason TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    changed TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS connections_started ON connections(started);
CREATE INDEX IF NOT EXISTS orders_at ON orders(at);
"""
HALTED = "halted"
# Columns added after the first release, created in an existing log at open (SQLite ADD COLUMN
# keeps every row; the new column is NULL in rows written before it).
ADDED_COLUMNS = {"connections": {"cert_serial": "TEXT"}}


def _migrate(db: sqlite3.Connection) -> None:
    """Give a log written before the 'forwarding' state the new CHECK (SQLite cannot alter one)."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'orders'").fetchone()
    if row is None or "'forwarding'" in row[0]:
        return
    create = re.search(r"CREATE TABLE IF NOT EXISTS orders \(.*?\n\);", SCHEMA, re.S)
    assert create is not None
    db.execute("BEGIN")  # one transaction: the rows move or nothing changes
    db.execute("ALTER TABLE orders RENAME TO orders_before_forwarding")
    db.execute(create[0])
    db.execute("INSERT INTO orders SELECT * FROM orders_before_forwarding")
    db.execute("DROP TABLE orders_before_forwarding")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timestamp(moment: datetime) -> str:
    """`moment` in the log's time format (naive datetimes are local time)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _add_columns(db: sqlite3.Connection) -> None:
    for table, columns in ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class AuditLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._db:
            _migrate(self._db)
            self._db.executescript(SCHEMA)
            _add_columns(self._db)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ibgw-gate-audit")

    def _commit(self, sql: str, params: tuple) -> int:
        with self._db:
            return self._db.execute(sql, params).lastrowid or 0  # rowids start at 1

    async def _write(self, sql: str, params: tuple) -> int:
        """Run one statement and commit it (fsync'd) on the writer thread; the new row id."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._commit, sql, params)

    async def connection(
        self,
        app: str | None,
        client_id: int,
        source: str,
        version: int,
        outcome: str,
        reason: str | None = None,
        cert_serial: str | None = None,
    ) -> int:
        """A connection's row. client_id -1 and version 0: refused before the TWS handshake (TLS)."""
        ended = now() if outcome == "refused" else None
        return await self._write(
            "INSERT INTO connections (app, client_id, source, version, started, ended, outcome, reason, "
            "cert_serial) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (app, client_id, source, version, now(), ended, outcome, reason, cert_serial),
        )

    async def order_forwarded(self, row_id: int) -> None:
        """The order's bytes were handed to the gateway's socket."""
        await self._write("UPDATE orders SET decision = 'forwarded' WHERE id = ?", (row_id,))

    async def connection_ended(self, row_id: int, reason: str) -> None:
        await self._write(
            "UPDATE connections SET ended = ?, reason = ? WHERE id = ?", (now(), reason, row_id)
        )

    async def order(
        self, connection_id: int, app: str, client_id: int, order: OrderRequest, reason: str | None
    ) -> int:
        """Record an order request: 'forwarding' (to be confirmed by order_forwarded) or 'refused'."""
        quantity = None if order.quantity is None else str(order.quantity)
        return await self._write(
            "INSERT INTO orders (at, connection_id, app, client_id, request, order_id, symbol, sec_type, "
            "action, quantity, order_type, limit_price, decision, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now(),
                connection_id,
                app,
                client_id,
                order.request,
                order.order_id,
                order.symbol,
                order.sec_type,
                order.action,
                quantity,
                order.order_type,
                order.limit_price,
                "forwarding" if reason is None else "refused",
                reason,
            ),
        )

    def end_orphans(self) -> None:
        """Connections a killed gate left open ended when it died (the exact time is unknown)."""
        with self._db:
            self._db.execute(
                "UPDATE connections SET ended = ?, reason = 'gate exited without closing' "
                "WHERE ended IS NULL AND outcome = 'accepted'",
                (now(),),
            )

    def halted(self) -> bool:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (HALTED,)).fetchone()
        return row is not None and row[0] == "1"

    async def set_halted(self, halted: bool) -> None:
        await self._write(
            "INSERT INTO settings (key, value, changed) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value, changed = excluded.changed",
            (HALTED, str(int(halted)), now()),
        )

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._db.close()


# ---- reading (ibgw audit) ---------------------------------------------------------------------


def _rows(db: sqlite3.Connection, sql: str, params: list) -> list[dict[str, Any]]:
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def query(
    path: Path, app: str | None = None, since: datetime | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Connections started and order requests made since `since` (by `app`), oldest first.

    FileNotFoundError if there is no audit log at `path`."""
    if not path.is_file():
        raise FileNotFoundError(f"no audit log at {path}")
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        results = {}
        for table, time_column in (("connections", "started"), ("orders", "at")):
            where, params = ["1"], []
            if app is not None:
                where.append("app = ?")
                params.append(app)
            if since is not None:
                where.append(f"{time_column} >= ?")
                params.append(timestamp(since))
            results[table] = _rows(
                db, f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY id", params
            )
        return results
    finally:
        db.close()
