"""The warehouse's short transactions without starting a DuckDB instance for each.

``duckdb.connect(file)`` starts a database instance (catalogue, buffer manager, worker threads)
and ``close()`` checkpoints and tears it down. Measured on a 1.3 MB warehouse with a 170-row
insert: ~30 ms of CPU a transaction (connect 27 ms, close 9 ms), and the query writer and the
loader run one every few hundred milliseconds on the cores the PACS needs too. So this process
keeps one in-memory instance and ATTACHes the file for each transaction, DETACHing it after:
the same DuckDB file lock, taken by the ATTACH and let go by the DETACH (which checkpoints the
WAL, as the last close did), so another process can open the file as soon as it returns; ~10
ms of CPU.

The file is attached under its stem, the name ``duckdb.connect`` gives it, and each
transaction's cursor USEs it, so SQL reads as it did (``raw.x``, ``main.x``,
``current_database()``). An open nested in another (the writer lock serialises a process's
threads and is re-entrant: ``lock.holding``) shares the attached file; the outermost close
detaches it. A file another DuckDB instance of this process has open (a test's connection,
dbt-duckdb's before it is released) cannot be attached beside it (DuckDB's "Unique file handle
conflict"): that open is a ``duckdb.connect``, which shares that instance, as before.
tests/warehouse/test_attached.py holds each of these against DuckDB.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

#: names an attached file cannot take: the in-memory instance's own catalogues
_RESERVED = frozenset({"memory", "system", "temp"})


@dataclass
class _Attached:
    alias: str
    read_only: bool
    depth: int = 0


_instance: list[duckdb.DuckDBPyConnection] = []  # this process's in-memory instance, once made
_attached: dict[str, _Attached] = {}  # the file's absolute path -> its attachment
#: guards the two above and the instance's own connection (attach, detach, cursor): threads
#: working on two different warehouses may open at once
_guard = threading.Lock()
abandoned: list[duckdb.DuckDBPyConnection] = []  # never closed: see _forget_in_child


def _memory() -> duckdb.DuckDBPyConnection:
    if not _instance:
        _instance.append(duckdb.connect(":memory:"))
    return _instance[0]


def _forget_in_child() -> None:
    # A forked child (only ever to exec: workers are spawned) must not use or close the
    # parent's instance, whose threads it does not have: left unreferenced by this module.
    abandoned.extend(_instance)
    _instance.clear()
    _attached.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _alias_for(path: Path) -> str:
    taken = {a.alias for a in _attached.values()} | _RESERVED
    alias, n = path.stem or "warehouse", 1
    while alias.lower() in taken:
        alias, n = f"{path.stem}_{n}", n + 1
    return alias


def in_use_elsewhere(e: Exception) -> bool:
    """DuckDB's refusal to attach a file another instance of this process has open."""
    return "Unique file handle conflict" in str(e)


def open_file(path: Path, read_only: bool) -> tuple[duckdb.DuckDBPyConnection, Callable[[], None]]:
    """A connection to the DuckDB file at ``path`` and what ends it (rolling back what was not
    committed). Raises what ``duckdb.connect`` would on a file another process holds
    (``duckdb.IOException``, "Could not set lock")."""
    key = os.path.abspath(path)
    with _guard:
        held = _attached.get(key) or _attach(key, path, read_only)
        if held is not None:
            if held.read_only and not read_only:
                raise duckdb.ConnectionException(
                    f"{path} is open read-only in this process: it cannot be written inside that"
                )
            held.depth += 1
            try:
                cursor = _memory().cursor()
            except BaseException:
                _release(key)
                raise
    if held is None:  # another instance of this process has it: share that one, as before
        con = duckdb.connect(str(path), read_only=read_only)
        return con, con.close

    def close() -> None:
        try:
            cursor.close()  # an open transaction is rolled back
        finally:
            with _guard:
                _release(key)

    try:
        cursor.execute(f"use {_ident(held.alias)}")
    except BaseException:
        close()
        raise
    return cursor, close


def _attach(key: str, path: Path, read_only: bool) -> _Attached | None:
    """Attach ``path`` (under ``_guard``); None when another instance of this process has it."""
    alias = _alias_for(path)
    mode = " (read_only)" if read_only else ""
    try:
        _memory().execute(f"attach {_literal(str(path))} as {_ident(alias)}{mode}")
    except duckdb.Error as e:
        if not in_use_elsewhere(e):
            raise
        return None
    held = _attached[key] = _Attached(alias, read_only)
    return held


def _release(key: str) -> None:
    """One close of ``key``'s attachment (under ``_guard``); the last detaches it."""
    held = _attached[key]
    held.depth -= 1
    if held.depth == 0:
        del _attached[key]
        _memory().execute(f"detach {_ident(held.alias)}")


__all__ = ["in_use_elsewhere", "open_file"]
