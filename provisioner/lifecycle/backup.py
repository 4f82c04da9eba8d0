"""Backups with restic: every hosted agency's site, and the state that cannot be re-created.

Each agency's site is fetched through the host agent's snapshot (the one offboarding
archives) and staged under ``<state>/backup/staging/sites/<slug>/`` laid out like an
offboarding archive: ``manifest.json`` (every file's sha256 and masked mode), ``site/...``
and ``vhost/<slug>.conf``. The staging path of an agency never changes and a file is
only rewritten when its content, mode or time changed, so restic skips what it already
has and deduplicates the rest. One snapshot per agency (``--tag agency:<slug>``) and
one of the state (``--tag state``: inventory, audit log, history, ACME account key), all
with ``--host`` = the inventory id. An agency whose site did not change since its last
snapshot gets no new one (its hashes are compared first, without fetching content).

Retention is restic's own ``forget --prune`` with the ``backup.retention`` of
group_vars/all.yml, run after every backup (and by ``provisioner backup prune``).
A restore gets the agency's snapshot back into a private folder, checks every file
against the manifest, and hands it to the restore (restore.py): files written back byte
for byte with masked modes, then onboarding.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import BackupError, ProvisionerError, UsageError
from ..hosts import hostlib
from ..hosts.agent import SiteSnapshot
from ..registry.models import Agency, Inventory
from ..safety import audit
from ..tls.acme import AcmeAccount
from ..verify import history
from .archive import (
    MANIFEST_MEMBER,
    SITE_PREFIX,
    VHOST_PREFIX,
    ArchivedSite,
    archived_site,
    check_received,
    make_manifest,
)
from .restic import BackupSummary, Restic, Snapshot
from .run import LockedRun, Report, quiet, utc_now

BACKUP_DIR = "backup"
STATE_TAG = "state"
LAST_SNAPSHOT = ".snapshot"  # beside a staged site: the id of the snapshot that holds it
VOLATILE_MANIFEST_KEYS = ("created_at", "operator", "command")


def agency_tag(slug: str) -> str:
    return f"agency:{slug}"


def backup_dir(state_dir: Path) -> Path:
    return state_dir / BACKUP_DIR


def restic_for(inventory: Inventory) -> Restic:
    """The repository group_vars names; UsageError when it names none."""
    settings = inventory.settings.backup
    if settings is None:
        raise UsageError(f"{inventory.root / 'group_vars' / 'all.yml'}: backup: not set",
                         hint="add backup: {repository: ..., password_file: ..., retention: "
                              "{daily: 7, weekly: 4, monthly: 6}} (see README)")
    cache = backup_dir(inventory.state_dir) / "cache"
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Restic(settings, cache)


# =========================================================================== staging (files)


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def same_content(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """True when two manifests describe the same site (when and by whom aside)."""
    if old is None:
        return False
    strip = lambda m: {k: v for k, v in m.items() if k not in VOLATILE_MANIFEST_KEYS}  # noqa: E731
    return strip(old) == strip(new)


def read_staged_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST_MEMBER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _inside(folder: Path, rel: str) -> Path:
    """``folder/rel``, refusing a path that would leave ``folder`` (hosts are not trusted)."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ProvisionerError(f"refusing an unsafe path from the host: {rel!r}")
    return folder.joinpath(*parts)


def stage_site(folder: Path, manifest: Mapping[str, Any], files: Mapping[str, bytes],
               vhost: bytes | None) -> None:
    """Lay the site out in ``folder`` as an archive's members; a file the previous staging
    already holds (same hash, mode and time) is left alone, one no longer on the host goes."""
    staged = read_staged_manifest(folder) or {}
    previous = staged.get("files", {})
    wanted = set()
    for rel, entry in manifest["files"].items():
        path = _inside(folder / SITE_PREFIX.rstrip("/"), rel)
        wanted.add(path)
        if previous.get(rel) == entry and path.is_file():
            continue
        hostlib.write_atomic(path, files[rel], entry["mode"], mtime=entry["mtime"])
    vhost_path = folder / VHOST_PREFIX.rstrip("/") / f"{manifest['agency']}.conf"
    if vhost is not None:
        wanted.add(vhost_path)
    if vhost is not None and (staged.get("vhost") != manifest["vhost"] or not vhost_path.is_file()):
        hostlib.write_atomic(vhost_path, vhost, manifest["vhost"]["mode"],
                             mtime=manifest["vhost"]["mtime"])
    _remove_unwanted(folder, wanted | {folder / MANIFEST_MEMBER})
    hostlib.write_atomic(folder / MANIFEST_MEMBER,
                         json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n",
                         0o600, mtime=dt.datetime.now(dt.timezone.utc).timestamp())


def _remove_unwanted(folder: Path, wanted: set[Path]) -> None:
    for root, dirs, names in os.walk(folder, topdown=False):
        for name in names:
            path = Path(root) / name
            if path not in wanted:
                path.unlink()
        for name in dirs:
            path = Path(root) / name
            if not any(path.iterdir()):
                path.rmdir()


def load_staged(folder: Path, origin: Path) -> ArchivedSite:
    """A staged (or restored) site read back and checked like an archive."""
    members = {}
    for path in folder.rglob("*"):
        if path.is_symlink() or (not path.is_file() and not path.is_dir()):
            raise UsageError(f"{origin}: unexpected entry {path.relative_to(folder)}")
        if path.is_file():
            members[path.relative_to(folder).as_posix()] = path.read_bytes()
    return archived_site(members, origin)


def stage_state(folder: Path, inventory: Inventory) -> list[str]:
    """Copy what cannot be re-created into ``folder`` (0700): the inventory (without the
    state dir, should it be inside), audit.jsonl, a consistent copy of history.sqlite, the
    ACME account key and registration (modes kept: 0600). The names staged."""
    shutil.rmtree(folder, ignore_errors=True)
    _private_dir(folder)
    state = inventory.state_dir.resolve()

    def skip_state(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if (Path(directory) / n).resolve() == state]

    shutil.copytree(inventory.root, folder / "inventory", ignore=skip_state, symlinks=True)
    staged = ["inventory"]
    audit_file = inventory.state_dir / audit.FILE_NAME
    if audit_file.is_file():
        shutil.copy2(audit_file, folder / audit.FILE_NAME)
        staged.append(audit.FILE_NAME)
    history_file = history.history_path(inventory.state_dir)
    if history_file.is_file():
        _copy_sqlite(history_file, folder / history.FILE_NAME)
        staged.append(history.FILE_NAME)
    account = AcmeAccount(inventory.settings, inventory.state_dir)
    for path in (account.key_file, account.registration_file):
        if path.is_file():
            _private_dir(folder / "acme")
            shutil.copy2(path, folder / "acme" / path.name)
            staged.append(f"acme/{path.name}")
    return staged


def _copy_sqlite(source: Path, dest: Path) -> None:
    """SQLite's online backup: a consistent copy even while a sweep writes."""
    try:
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, \
                sqlite3.connect(dest) as dst:
            src.backup(dst)
    except sqlite3.Error as exc:
        raise ProvisionerError(f"history {source}: cannot copy for the backup: {exc}") from None
    finally:
        if dest.exists():
            dest.chmod(0o600)


# =========================================================================== results


@dataclass(frozen=True)
class BackupOutcome:
    target: str  # agency slug, or "state"
    status: str  # changed (new snapshot), ok (unchanged), failed
    detail: str
    summary: BackupSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "status": self.status, "detail": self.detail,
                "summary": self.summary.to_dict() if self.summary else None}


@dataclass(frozen=True)
class BackupRun:
    outcomes: tuple[BackupOutcome, ...]
    repository: str
    initialized: bool = False  # the repository was created by this run
    retention: tuple[int, int] | None = None  # (kept, removed) snapshots; None: not applied
    dry_run: bool = False

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        kept_removed = None if self.retention is None else \
            {"kept": self.retention[0], "removed": self.retention[1]}
        return {"repository": self.repository, "initialized": self.initialized,
                "dry_run": self.dry_run, "failed": self.failed, "retention": kept_removed,
                "outcomes": [o.to_dict() for o in self.outcomes]}


@dataclass(frozen=True)
class PruneResult:
    kept: int
    removed: int
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "removed": self.removed, "dry_run": self.dry_run}


# =========================================================================== backup


def _summary_text(summary: BackupSummary) -> str:
    snap = summary.snapshot_id or "dry run"
    return (f"snapshot {snap}: {summary.files_new} new, {summary.files_changed} changed, "
            f"{summary.files_unmodified} unchanged files; {summary.data_added} bytes added")


class Backup(LockedRun):
    """One backup run (holds the inventory lock: no offboarding removes a site meanwhile)."""

    def __init__(self, inventory: Inventory, report: Report = quiet, *,
                 command: str | None = None, break_lock: bool = False):
        super().__init__(inventory, report, command=command, break_lock=break_lock)
        self.restic = restic_for(inventory)
        self.staging = _private_dir(backup_dir(inventory.state_dir) / "staging")
        self.host_id = inventory.settings.inventory_id

    def run(self, agencies: Sequence[Agency], *, state: bool = True,
            dry_run: bool = False) -> BackupRun:
        created = False if dry_run else self.restic.init()
        if dry_run and not self.restic.initialized:
            raise UsageError(f"{self.restic.repository}: no repository yet",
                             hint="run without --dry-run once: it is created then")
        known = {s.id for s in self.restic.snapshots(self.host_id)}
        outcomes = [self._guarded(a.slug, lambda a=a: self._site(a, known, dry_run))
                    for a in agencies if a.host is not None]
        if state:
            outcomes.append(self._guarded(STATE_TAG, lambda: self._state(dry_run)))
        retention = None
        if not dry_run and not any(o.status == "failed" for o in outcomes):
            self.report("retention: restic forget --prune")
            retention = self.restic.forget(self.host_id)
        return BackupRun(tuple(outcomes), self.restic.repository, created, retention, dry_run)

    def _guarded(self, target: str, step: Callable[[], BackupOutcome]) -> BackupOutcome:
        try:
            outcome = step()
        except ProvisionerError as exc:
            outcome = BackupOutcome(target, "failed", str(exc))
        self.report(f"{target}: {outcome.status}: {outcome.detail}")
        return outcome

    def _site(self, agency: Agency, known: set[str], dry_run: bool) -> BackupOutcome:
        host = self.inventory.hosts[agency.host]
        client = self.pool.client(host.name)
        folder = self.staging / "sites" / agency.slug
        marker = folder.parent / f"{agency.slug}{LAST_SNAPSHOT}"
        hashes = client.site_snapshot(agency, content=False)
        if not hashes.exists and hashes.vhost is None:
            return BackupOutcome(agency.slug, "ok", f"no site on {host.name}: nothing to back up")
        last = marker.read_text().strip() if marker.is_file() else None
        if last and any(i.startswith(last) for i in known) and same_content(read_staged_manifest(folder),
                                          self._manifest(agency, hashes)):
            return BackupOutcome(agency.slug, "ok", f"unchanged since snapshot {last[:8]}")
        snapshot = client.site_snapshot(agency, content=True)
        check_received(snapshot, host.name)
        manifest = self._manifest(agency, snapshot)
        stage_site(_private_dir(folder), manifest,
                   {rel: f.data or b"" for rel, f in snapshot.files.items()},
                   snapshot.vhost.data if snapshot.vhost else None)
        marker.unlink(missing_ok=True)  # the staging no longer matches the last snapshot
        summary = self.restic.backup([folder], self.host_id, [agency_tag(agency.slug)],
                                     dry_run=dry_run)
        if summary.snapshot_id and not dry_run:
            marker.write_text(summary.snapshot_id + "\n")
        return BackupOutcome(agency.slug, "ok" if dry_run else "changed",
                             f"{len(snapshot.files)} files from {host.name}; "
                             + _summary_text(summary), summary)

    def _manifest(self, agency: Agency, snapshot: SiteSnapshot) -> dict[str, Any]:
        host = self.inventory.hosts[agency.host]
        return make_manifest(agency, host, snapshot, None, None, utc_now(), self.command)

    def _state(self, dry_run: bool) -> BackupOutcome:
        folder = self.staging / STATE_TAG
        try:  # removed afterwards: no second plaintext copy of the account key stays around
            staged = stage_state(folder, self.inventory)
            summary = self.restic.backup([folder], self.host_id, [STATE_TAG], dry_run=dry_run)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return BackupOutcome(STATE_TAG, "ok" if dry_run else "changed",
                             f"{', '.join(staged)}; " + _summary_text(summary), summary)


# =========================================================================== list, restore


def list_snapshots(inventory: Inventory, slug: str | None = None) -> list[Snapshot]:
    """The inventory's snapshots (of one agency), oldest first."""
    if slug is not None:
        inventory.select([slug])
    restic = restic_for(inventory)
    if not restic.initialized:
        return []
    return restic.snapshots(inventory.settings.inventory_id,
                            agency_tag(slug) if slug else None)


def find_snapshot(snapshots: Sequence[Snapshot], slug: str, which: str) -> Snapshot:
    """``latest`` or a snapshot id (or its prefix) among the agency's snapshots."""
    if not snapshots:
        raise UsageError(f"no backup of {slug} in the repository",
                         hint=f"run 'provisioner backup --agency {slug}' first")
    if which == "latest":
        return max(snapshots, key=lambda s: s.time)
    matches = [s for s in snapshots if s.id.startswith(which.lower())] if len(which) >= 4 else []
    if len(matches) != 1:
        raise UsageError(f"--from-backup {which}: {'no' if not matches else 'more than one'} "
                         f"snapshot of {slug} matches",
                         hint=f"'latest', or an id from 'provisioner backup list {slug}'")
    return matches[0]


def fetch_from_backup(inventory: Inventory, slug: str, which: str) -> ArchivedSite:
    """The agency's site from a snapshot, checked against its manifest (in memory)."""
    [agency] = inventory.select([slug])
    restic = restic_for(inventory)
    snapshots = list_snapshots(inventory, agency.slug)
    chosen = find_snapshot(snapshots, agency.slug, which)
    if len(chosen.paths) != 1:
        raise BackupError(restic.repository, f"snapshot {chosen.short_id} is not a site backup")
    scratch = _private_dir(backup_dir(inventory.state_dir) / "restore")
    with tempfile.TemporaryDirectory(dir=scratch) as target:
        restic.restore(chosen.id, Path(target), chosen.paths[0])
        folder = Path(target) / chosen.paths[0].lstrip("/")
        if not folder.is_dir():
            raise BackupError(restic.repository, f"snapshot {chosen.short_id} holds no site")
        archived = load_staged(folder, Path(f"backup snapshot {chosen.short_id}"))
    if archived.agency != agency.slug:
        raise UsageError(f"snapshot {chosen.short_id} holds {archived.agency}, not {agency.slug}")
    return archived


def prune(inventory: Inventory, *, dry_run: bool = False) -> PruneResult:
    restic = restic_for(inventory)
    if not restic.initialized:
        raise UsageError(f"{restic.repository}: no repository yet",
                         hint="'provisioner backup --all' creates it")
    kept, removed = restic.forget(inventory.settings.inventory_id, dry_run=dry_run)
    return PruneResult(kept, removed, dry_run)


def check(inventory: Inventory) -> str:
    restic = restic_for(inventory)
    if not restic.initialized:
        raise UsageError(f"{restic.repository}: no repository yet",
                         hint="'provisioner backup --all' creates it")
    return restic.check()
