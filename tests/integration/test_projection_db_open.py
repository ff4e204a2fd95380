"""Processes opening a new SQLite projection store together all get it (none fails with
"database is locked" while another switches the file to WAL)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest

from services.projectionstore.db import Database

pytestmark = pytest.mark.integration

PROCESSES = 6
ROUNDS = 40


def _open_and_write(path: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    try:
        db = Database("sqlite", path=Path(path), sqlite_cache_kib=1024)
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS t (x)")
            cur.execute("INSERT INTO t VALUES (1)")
        db.close()
        out.put("ok")
    except Exception as exc:
        out.put(repr(exc))


def test_processes_opening_a_new_store_together_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for n in range(ROUNDS):
        path = tmp_path / f"p{n}.sqlite"
        barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [
            ctx.Process(target=_open_and_write, args=(str(path), barrier, out))
            for _ in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        answers = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        assert answers == ["ok"] * PROCESSES, f"round {n}: {answers}"
        db = Database("sqlite", path=path)
        with db.transaction(write=False) as cur:
            assert cur.execute("SELECT COUNT(*) FROM t").fetchone()[0] == PROCESSES
            assert cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
