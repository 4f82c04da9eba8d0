"""restic, the backup tool: fixed argument lists, JSON answers, every failure a BackupError.

The repository password never reaches a command line: restic reads it from the 0600
file named in ``RESTIC_PASSWORD_FILE``. Any ``RESTIC_*`` variable of the caller's
environment is dropped, so the repository used is always the one the settings name.
The argument builders and parsers are pure; ``Restic`` runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import BackupError
from ..registry.models import BackupSettings

RESTIC_BINARY = "restic"
ERROR_TAIL_LINES = 3  # of restic's stderr, in an error message
ERROR_LINE_CHARS = 300
TIMEOUT = 6 * 3600  # a first backup of a large regency over a slow disk


@dataclass(frozen=True)
class BackupSummary:
    """restic's summary of one ``backup`` run."""

    snapshot_id: str | None  # None with --dry-run
    files_new: int
    files_changed: int
    files_unmodified: int
    bytes_processed: int
    data_added: int  # bytes the repository grew by (after dedup, before compression)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    host: str
    tags: tuple[str, ...]
    paths: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "short_id": self.short_id, "time": self.time,
                "host": self.host, "tags": list(self.tags), "paths": list(self.paths)}


# =========================================================================== arguments (pure)


def backup_args(paths: Sequence[Path], host: str, tags: Sequence[str], *,
                dry_run: bool = False) -> list[str]:
    return ["backup", "--json", "--host", host, *[a for t in tags for a in ("--tag", t)],
            *(["--dry-run"] if dry_run else []), "--", *[str(p) for p in paths]]


def forget_args(retention: Mapping[str, int], host: str, *, dry_run: bool = False) -> list[str]:
    """Retention per agency and for the state (snapshots grouped by host and tags), only
    for this inventory's snapshots."""
    keep = [a for period, count in retention.items() for a in (f"--keep-{period}", str(count))]
    return ["forget", "--json", "--prune", "--host", host, "--group-by", "host,tags", *keep,
            *(["--dry-run"] if dry_run else [])]


def snapshots_args(host: str, tag: str | None = None) -> list[str]:
    return ["snapshots", "--json", "--host", host, *(["--tag", tag] if tag else [])]


def restore_args(snapshot_id: str, target: Path, include: str) -> list[str]:
    return ["restore", snapshot_id, "--target", str(target), "--include", include]


# =========================================================================== answers (pure)


def _json_lines(stdout: str) -> list[Any]:
    parsed = []
    for line in stdout.splitlines():
        if line.startswith(("{", "[")):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
    return parsed


def parse_backup_summary(stdout: str) -> BackupSummary:
    summary = next((m for m in reversed(_json_lines(stdout))
                    if isinstance(m, dict) and m.get("message_type") == "summary"), None)
    if summary is None:
        raise ValueError("no summary in restic's output")
    return BackupSummary(snapshot_id=summary.get("snapshot_id"),
                         files_new=int(summary.get("files_new", 0)),
                         files_changed=int(summary.get("files_changed", 0)),
                         files_unmodified=int(summary.get("files_unmodified", 0)),
                         bytes_processed=int(summary.get("total_bytes_processed", 0)),
                         data_added=int(summary.get("data_added", 0)),
                         seconds=float(summary.get("total_duration", 0.0)))


def parse_snapshots(stdout: str) -> list[Snapshot]:
    """``restic snapshots --json``: oldest first."""
    raw = json.loads(stdout or "null") or []  # no snapshots: [] (or null)
    if not isinstance(raw, list):
        raise ValueError("not a list of snapshots")
    return [Snapshot(id=s["id"], short_id=s.get("short_id", s["id"][:8]), time=s["time"],
                     host=s.get("hostname", ""), tags=tuple(s.get("tags") or ()),
                     paths=tuple(s.get("paths") or ())) for s in raw]


def parse_forget(stdout: str) -> tuple[int, int]:
    """(kept, removed) snapshots from ``forget --json`` (its first line: prune's text follows)."""
    groups = next((m for m in _json_lines(stdout) if isinstance(m, list)), [])
    kept = sum(len(g.get("keep") or ()) for g in groups)
    removed = sum(len(g.get("remove") or ()) for g in groups)
    return kept, removed


def error_tail(stderr: str) -> str:
    """The last lines restic wrote to stderr, bounded and printable."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    tail = " / ".join(line[:ERROR_LINE_CHARS] for line in lines[-ERROR_TAIL_LINES:])
    return "".join(ch if ch.isprintable() else "?" for ch in tail) or "no message"


# =========================================================================== client


class Restic:
    """One repository, as group_vars' ``backup:`` names it."""

    def __init__(self, settings: BackupSettings, cache_dir: Path, *,
                 binary: str = RESTIC_BINARY):
        self.settings = settings
        self.cache_dir = cache_dir
        self.binary = binary

    @property
    def repository(self) -> str:
        return str(self.settings.repository)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update(RESTIC_REPOSITORY=self.repository,
                   RESTIC_PASSWORD_FILE=str(self.settings.password_file),
                   RESTIC_CACHE_DIR=str(self.cache_dir))
        return env

    def run(self, args: Sequence[str]) -> str:
        """restic's stdout; BackupError when it cannot be run or exits non-zero."""
        try:
            done = subprocess.run([self.binary, *args], env=self._env(), capture_output=True,
                                  text=True, errors="replace", timeout=TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise BackupError(self.repository, f"{self.binary} is not installed",
                              hint="apt-get install restic") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackupError(self.repository, f"restic {args[0]}: {exc}") from None
        if done.returncode != 0:
            raise BackupError(self.repository, f"restic {args[0]} failed (exit "
                              f"{done.returncode}): {error_tail(done.stderr)}",
                              hint=_hint(done.stderr))
        return done.stdout

    def _parsed(self, what: str, parse, stdout: str):
        try:
            return parse(stdout)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(self.repository, f"restic {what}: unexpected output ({exc})") \
                from None

    @property
    def initialized(self) -> bool:
        return (self.settings.repository / "config").is_file()

    def init(self) -> bool:
        """Create the repository unless it exists; True when created."""
        if self.initialized:
            return False
        self.settings.repository.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run(["init"])
        return True

    def backup(self, paths: Sequence[Path], host: str, tags: Sequence[str], *,
               dry_run: bool = False) -> BackupSummary:
        stdout = self.run(backup_args(paths, host, tags, dry_run=dry_run))
        return self._parsed("backup", parse_backup_summary, stdout)

    def snapshots(self, host: str, tag: str | None = None) -> list[Snapshot]:
        return self._parsed("snapshots", parse_snapshots, self.run(snapshots_args(host, tag)))

    def forget(self, host: str, *, dry_run: bool = False) -> tuple[int, int]:
        stdout = self.run(forget_args(self.settings.retention, host, dry_run=dry_run))
        return self._parsed("forget", parse_forget, stdout)

    def check(self) -> str:
        """restic's last line ("no errors were found"); BackupError on any error."""
        lines = [line for line in self.run(["check"]).splitlines() if line.strip()]
        return lines[-1] if lines else "checked"

    def restore(self, snapshot_id: str, target: Path, include: str) -> None:
        self.run(restore_args(snapshot_id, target, include))


def _hint(stderr: str) -> str | None:
    if "wrong password" in stderr:
        return "the password file does not open this repository (backup.password_file)"
    if "unable to open config file" in stderr or "Is there a repository" in stderr:
        return "no repository there yet: 'provisioner backup --all' creates it"
    if "locked" in stderr:
        return "another restic run holds the repository lock; wait, or check for a dead one " \
               "with 'restic list locks'"
    return None
