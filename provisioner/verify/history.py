"""Every sweep, kept in SQLite (``<state_dir>/history.sqlite``) for trends.

One row per sweep with its figures, one row per agency and sweep with its verdict and
the full JSON Lines record, so any report can be rebuilt later from history alone.
Alerts keep here what they last saw of each agency (``alert_state``) and, per channel,
the changes not yet delivered (``alert_queue``).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ProvisionerError
from ..registry.load import ensure_state_dir
from .sweep import SweepResult, record_texts, summarise

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
CREATE TABLE IF NOT EXISTS alert_state (
    agency TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_queue (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    change TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_at TEXT
);
CREATE INDEX IF NOT EXISTS alert_queue_by_channel ON alert_queue (channel, id);
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
                db.executemany("INSERT INTO sweep_agencies VALUES (?, ?, ?, ?, ?, ?, ?)",
                               _agency_rows(sweep_id, sweep))
        except sqlite3.Error as exc:
            raise ProvisionerError(f"history {history_path(state_dir)}: {exc}") from None
    return sweep_id


def _agency_rows(sweep_id: int, sweep: SweepResult) -> Iterator[tuple[Any, ...]]:
    """One row per record, made as it is inserted (a large sweep's rows are never all in
    memory); the record is stored as the JSON text the reports write."""
    for text in record_texts(sweep.records):
        r = json.loads(text)
        yield (sweep_id, r["agency"] or r["url"], int(r["active"]), r["publication"]["score"],
               r["publication"]["band"], r["cert"]["days_left"], text)


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


def latest_sweep(state_dir: Path) -> SweepResult | None:
    """The last sweep rebuilt from its stored records (None before the first sweep)."""
    rows = _query(state_dir, "SELECT id, started_at, finished_at, scoring_version FROM sweeps "
                             "ORDER BY id DESC LIMIT 1", ())
    if not rows:
        return None
    sweep_id, started_at, finished_at, scoring_version = rows[0]
    records = tuple(json.loads(r[0]) for r in _query(
        state_dir, "SELECT record FROM sweep_agencies WHERE sweep_id = ? ORDER BY rowid",
        (sweep_id,)))
    return SweepResult(started_at=dt.datetime.fromisoformat(started_at),
                       finished_at=dt.datetime.fromisoformat(finished_at),
                       scoring_version=scoring_version, records=records,
                       summary=summarise(records))


def sweep_trend_since(state_dir: Path, since: dt.datetime) -> list[SweepPoint]:
    """Every sweep started at or after ``since``, oldest first."""
    rows = _query(state_dir, "SELECT id, started_at, total, active, active_pct, mean_score, "
                             "expiring FROM sweeps WHERE started_at >= ? ORDER BY id",
                  (since.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),))
    return [SweepPoint(*row) for row in rows]


# --------------------------------------------------------------------------- alerts

AlertStep = Callable[[dict[str, dict]], tuple[dict[str, dict], list[dict]]]


def update_alert_state(state_dir: Path, step: AlertStep, channels: list[str]) -> list[dict]:
    """In one transaction (no other sweep in between): read the state last seen, let
    ``step`` compute the new state and the changes, store the state and queue every
    change for each channel. Queues of channels no longer configured are dropped.
    Returns the changes."""
    with closing(_connect(state_dir)) as db:
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                previous = {agency: json.loads(state) for agency, state in
                            db.execute("SELECT agency, state FROM alert_state")}
                state, found = step(previous)
                db.execute("DELETE FROM alert_state")
                db.executemany("INSERT INTO alert_state VALUES (?, ?)",
                               [(agency, json.dumps(value)) for agency, value in state.items()])
                db.execute(f"DELETE FROM alert_queue WHERE channel NOT IN "
                           f"({', '.join('?' * len(channels))})", channels)
                now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                db.executemany("INSERT INTO alert_queue (channel, change, queued_at) "
                               "VALUES (?, ?, ?)",
                               [(channel, json.dumps(change, ensure_ascii=False), now)
                                for channel in channels for change in found])
        except sqlite3.Error as exc:
            raise ProvisionerError(f"history {history_path(state_dir)}: {exc}") from None
    return found


CLAIM_SECONDS = 600
"""A sweep sending a channel's queue claims it this long: another sweep at the same time
does not send it too, and the queue of a sweep killed while sending is sent later."""


def claim_alerts(state_dir: Path, channel: str,
                 now: dt.datetime | None = None) -> list[tuple[int, dict]]:
    """The changes waiting for one channel and not being sent by another sweep, oldest
    first, as (queue id, change); claimed until delivered, failed or CLAIM_SECONDS."""
    now = now or dt.datetime.now(dt.timezone.utc)
    stale = (now - dt.timedelta(seconds=CLAIM_SECONDS)).isoformat(timespec="seconds")
    with closing(_connect(state_dir)) as db:
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                rows = db.execute("SELECT id, change FROM alert_queue WHERE channel = ? AND "
                                  "(claimed_at IS NULL OR claimed_at < ?) ORDER BY id",
                                  (channel, stale)).fetchall()
                db.executemany("UPDATE alert_queue SET claimed_at = ? WHERE id = ?",
                               [(now.isoformat(timespec="seconds"), row_id) for row_id, _ in rows])
        except sqlite3.Error as exc:
            raise ProvisionerError(f"history {history_path(state_dir)}: {exc}") from None
    return [(row_id, json.loads(change)) for row_id, change in rows]


def alerts_delivered(state_dir: Path, ids: list[int]) -> None:
    _modify(state_dir, "DELETE FROM alert_queue WHERE id = ?", [(i,) for i in ids])


def alerts_failed(state_dir: Path, ids: list[int], error: str) -> None:
    """Keep them for the next sweep, with the error."""
    _modify(state_dir, "UPDATE alert_queue SET attempts = attempts + 1, last_error = ?, "
                       "claimed_at = NULL WHERE id = ?", [(error, i) for i in ids])


@dataclass(frozen=True)
class QueueStatus:
    channel: str
    waiting: int
    oldest: str | None
    attempts: int  # of the oldest waiting change
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alert_queues(state_dir: Path) -> list[QueueStatus]:
    """What waits for each channel (channels with nothing waiting are not listed)."""
    rows = _query(state_dir, "SELECT channel, COUNT(*), MIN(queued_at), MAX(attempts), "
                             "(SELECT last_error FROM alert_queue q WHERE q.channel = "
                             "alert_queue.channel ORDER BY id DESC LIMIT 1) "
                             "FROM alert_queue GROUP BY channel ORDER BY channel", ())
    return [QueueStatus(*row) for row in rows]


def _modify(state_dir: Path, sql: str, rows: list[tuple]) -> None:
    with closing(_connect(state_dir)) as db:
        try:
            with db:
                db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise ProvisionerError(f"history {history_path(state_dir)}: {exc}") from None
