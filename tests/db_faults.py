"""Database faults for tests: SQLite's write lock held from a second connection."""

from __future__ import annotations

import sqlite3

import pytest
from django.db import connection

__all__ = ["SQLiteLock", "sqlite_only"]


class SQLiteLock:
    """Hold SQLite's write lock from a second connection, as a busy or stuck writer would."""

    def __init__(self) -> None:
        name = connection.settings_dict["NAME"]
        uri = str(name).startswith("file:")
        self.conn = sqlite3.connect(name, uri=uri, check_same_thread=False, timeout=0.05,
                                    isolation_level=None)

    def acquire(self) -> None:
        self.conn.execute("BEGIN EXCLUSIVE")
        # A write makes the lock real in shared-cache (in-memory) databases too.
        self.conn.execute("UPDATE voiceconv_call SET status = status")
        self.conn.execute("DELETE FROM voiceconv_transcriptentry WHERE 0")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite locking (PostgreSQL has its own test)"
)
