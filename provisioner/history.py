"""Every sweep, kept in SQLite (``<state_dir>/history.sqlite``) for trends.

One row per sweep with its figures, one row per agency and sweep with its verdict and
the full JSON Lines record, so any report can be rebuilt later from history alone.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ProvisionerError
from .registry import ensure_state_dir
from .sweep import SweepResult

FILE_NAME = "history.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    total INTEGER NOT NULL,
    active INTEGER NOT NULL,
    active_pct REAL NOT NULL,
    mean_score REAL NOT NULL,
    expiring INTEGER NOT NULL,
    scoring_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_agencies (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    agency TEXT NOT NULL,
    active INTEGER NOT NULL,
    score REAL NOT NULL,
    band TEXT NOT NULL,
    days_left INTEGER,
    record TEXT NOT NULL,
    PRIMARY KEY (sweep_id, agency)
);
CREATE INDEX IF NOT EXISTS sweep_agencies_by_agency ON sweep_agencies (agency, sweep_id);
"""


@dataclass(frozen=True)
class SweepPoint:
    sweep_id: int
    started_at: str
    total: int
    active: int
    active_pct: float
    mean_score: float
    expiring: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AgencyPoint:
    sweep_id: int
    started_at: str
    active: bool
    score: float
    band: str
    days_left: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def history_path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def _connect(state_dir: Path) -> sqlite3.Connection:
    path = history_path(ensure_state_dir(Path(state_dir)))
    try:
        connection = sqlite3.connect(path)
        path.chmod(0o600)
        connection.executescript(SCHEMA)
        return connection
    except sqlite3.Error as exc:
        raise ProvisionerError(f"history {path}: {exc}",
                               hint="move the file aside to start a new history") from None


def record_sweep(state_dir: Path, sweep: SweepResult) -> int:
    """Store one sweep; returns its id."""
    s = sweep.summary
    with closing(_connect(state_dir)) as db:
        try:
            with db:
                cursor = db.execute(
                    "INSERT INTO sweeps (started_at, finished_at, total, active, active_pct, "
                    "mean_score, expiring, scoring_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sweep.started_at.isoformat(timespec="seconds"),
                     sweep.finished_at.isoformat(timespec="seconds"), s.total, s.active,
                     s.active_pct, s.mean_score, len(s.expiring), sweep.scoring_version))
                sweep_id = cursor.lastrowid
                db.executemany(
                    "INSERT INTO sweep_agencies VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(sweep_id, r["agency"] or r["url"], int(r["active"]),
                      r["publication"]["score"], r["publication"]["band"],
                      r["cert"]["days_left"], json.dumps(r, ensure_ascii=False))
                     for r in sweep.records])
        except sqlite3.Error as exc:
            raise ProvisionerError(f"history {history_path(state_dir)}: {exc}") from None
    return sweep_id


def sweep_trend(state_dir: Path, limit: int = 30) -> list[SweepPoint]:
    """The last ``limit`` sweeps, oldest first."""
    rows = _query(state_dir, "SELECT id, started_at, total, active, active_pct, mean_score, "
                             "expiring FROM sweeps ORDER BY id DESC LIMIT ?", (limit,))
    return [SweepPoint(*row) for row in reversed(rows)]


def agency_trend(state_dir: Path, agency: str, limit: int = 30) -> list[AgencyPoint]:
    """One agency's verdicts over the last ``limit`` sweeps it was in, oldest first."""
    rows = _query(state_dir, "SELECT s.id, s.started_at, a.active, a.score, a.band, a.days_left "
                             "FROM sweep_agencies a JOIN sweeps s ON s.id = a.sweep_id "
                             "WHERE a.agency = ? ORDER BY s.id DESC LIMIT ?", (agency, limit))
    return [AgencyPoint(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in reversed(rows)]


def _query(state_dir: Path, sql: str, params: tuple) -> list[tuple]:
    if not history_path(state_dir).is_file():
        return []
    with closing(_connect(state_dir)) as db:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise ProvisionerError(f"history {history_path(state_dir)}: {exc}") from None
