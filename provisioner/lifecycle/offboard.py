"""Offboarding and restore: archive an agency's site before anything is removed; bring it back.

Offboarding runs these steps in order; each must succeed before the next starts, so a
run that fails or is killed leaves a consistent state and a re-run finishes the job:

1. archive: the site folder and vhost are fetched in one round trip and written to
   ``<archive_dir>/<slug>-<UTC time>.tar.gz`` (0600, written atomically, its sha256 in
   ``<name>.sha256`` beside it, a manifest inside: agency, host, paths, file modes
   (masked: files at most 0644, folders 0755, never setuid/setgid/sticky),
   certificate serial, DNS records); the file is read back and every member compared
   with the hashes the host reported. An archive that already holds everything the
   host has is reused: a re-run never archives a half-removed site over a whole one;
2. dns: the records this inventory owns for the agency are deleted (one signed update,
   then every nameserver is checked); records it does not own are left alone. DNS goes
   first so that the name stops pointing at the host before the host stops serving it;
3. vhost: removed as a transaction (``nginx -t`` without it, put back when that fails,
   one reload), so nothing serves the site while its files go;
4. site: the site folder is deleted, after checking the archive still covers it;
5. cert: the agency's own certificate is revoked at the CA (``acme_revoke_on_offboard``)
   and its files deleted (a shared wildcard certificate stays);
6. registry: ``status: offboarded`` goes into agencies/<slug>.yml by a one-line edit
   that keeps every comment: the file stays, and the status is the last thing set.

Restore verifies the archive against its checksum, writes the files back byte for byte
(content, masked mode, mtime: an old archive that recorded a setuid file does not bring
back a setuid-root program), sets ``status: active`` and onboards the agency (DNS record,
vhost, a new certificate, verification). The vhost is generated again by onboarding (the
archived one names certificate files that no longer exist); the result says whether it
came out identical to the archived one.

Both hold the inventory lock for the whole run and append every change to the audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from ..dns.client import DEFAULT_PROPAGATION_TIMEOUT, PropagationTimeout
from ..dns.step import DnsPlan, apply_dns, plan_dns
from ..errors import ProvisionerError, SafetyError, UsageError
from ..hosts import ansible, hostlib
from ..hosts.agent import HostClient, SiteFile, SiteSnapshot
from ..plan import Change, Outcome, Plan
from ..registry.load import load_inventory
from ..registry.models import Agency, Host, Inventory
from ..safety.audit import AuditEntry, AuditLog, current_operator
from ..site import render as site
from ..tls.acme import revoke_certificate
from ..tls.certs import CertInfo, cert_info, records_dir
from ..tls.decisions import cert_targets
from . import access, access_plan
from . import onboard as onboarding

ARCHIVE_SCHEMA = "provisioner/offboard-archive/v1"
MANIFEST_MEMBER = "manifest.json"
SITE_PREFIX = "site/"
VHOST_PREFIX = "vhost/"
ARCHIVE_SUFFIX = ".tar.gz"
CHECKSUM_SUFFIX = ".sha256"
ARCHIVES_DIR = "archives"
OFFBOARD_STEPS = ("archive", "dns", "vhost", "site", "cert", "registry")

Report = Callable[[str], None]


def _quiet(_line: str) -> None:
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# =========================================================================== registry status (pure)

_STATUS_LINE = re.compile(r"^status[ \t]*:[^\r\n]*", re.M)
_SLUG_LINE = re.compile(r"^slug[ \t]*:[^\r\n]*(\r?\n)?", re.M)


def with_status(text: str, status: str, note: str = "") -> str:
    """The agency file with its top-level ``status:`` set to ``status``.

    The existing ``status:`` line is replaced, or one is added after the ``slug:``
    line; every other byte (comments, order, quoting) stays. The result is parsed back
    and must differ from the original only in ``status``: anything else is refused.
    """
    note = " ".join(note.split())
    line = f"status: {status}" + (f"  # {note}" if note else "")
    if _STATUS_LINE.search(text):
        new = _STATUS_LINE.sub(lambda _m: line, text, count=1)
    elif (slug := _SLUG_LINE.search(text)) is not None:
        newline = slug.group(1) or "\n"
        head = text[:slug.end()] if slug.group(1) else text[:slug.end()] + newline
        new = head + line + newline + text[slug.end():]
    else:
        new = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    try:
        before, after = yaml.safe_load(text), yaml.safe_load(new)
    except yaml.YAMLError as exc:
        raise ProvisionerError(f"cannot set status: the file is not valid YAML ({exc})") \
            from None
    if not isinstance(before, dict) or after != {**before, "status": status}:
        raise ProvisionerError("cannot set status with a one-line edit (is 'status:' a "
                               "multi-line value?)", hint=f"set 'status: {status}' by hand")
    return new


def set_registry_status(agency: Agency, status: str, note: str) -> bool:
    """Write ``status`` into the agency's registry file atomically; False when already set."""
    path = agency.source
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProvisionerError(f"{path}: cannot read: {exc.strerror}") from None
    current = yaml.safe_load(text).get("status", "active")
    if current == status:
        return False
    try:
        new = with_status(text, status, note)
    except ProvisionerError as exc:
        raise ProvisionerError(f"{path}: {exc.message}", hint=exc.hint) from None
    _write_atomic(path, new.encode("utf-8"), path.stat().st_mode & 0o7777)
    return True


# =========================================================================== archive format (pure)


def check_received(snapshot: SiteSnapshot, host_name: str) -> None:
    """Every fetched file (and the vhost) must hash to what the host computed."""
    for rel, f in [*snapshot.files.items(), *([("vhost", snapshot.vhost)]
                                               if snapshot.vhost else [])]:
        if hashlib.sha256(f.data or b"").hexdigest() != f.sha256:
            raise ProvisionerError(f"{rel}: the bytes received from {host_name} do not match "
                                   "the hash the host computed", hint="re-run; nothing was removed")


def archive_name(slug: str, when: dt.datetime, attempt: int = 0) -> str:
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{slug}-{stamp}{f'-{attempt}' if attempt else ''}{ARCHIVE_SUFFIX}"


def _archive_pattern(slug: str) -> re.Pattern[str]:
    return re.compile(re.escape(slug) + r"-(?P<stamp>\d{8}T\d{6}Z)(-(?P<attempt>\d+))?"
                      + re.escape(ARCHIVE_SUFFIX))


def checksum_text(name: str, data: bytes) -> str:
    """``sha256sum`` format, so ``sha256sum -c NAME.sha256`` checks it too."""
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


def parse_checksum(text: str, name: str) -> str | None:
    """The sha256 the checksum file gives for ``name`` (None when it gives none)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name and \
                re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            return parts[0]
    return None


def archived_mode(mode: int, *, folder: bool = False) -> int:
    """The mode an archive records and a restore sets (the host agent's one rule)."""
    return hostlib.dir_mode(mode) if folder else hostlib.file_mode(mode)


def _file_entry(f: SiteFile) -> dict[str, Any]:
    return {"sha256": f.sha256, "mode": archived_mode(f.mode), "size": f.size,
            "mtime": f.mtime}


def make_manifest(agency: Agency, host: Host, snapshot: SiteSnapshot,
                  cert: CertInfo | None, dns_plan: DnsPlan | None, when: dt.datetime,
                  command: str | None) -> dict[str, Any]:
    """What an archive holds and where it came from (every file's hash and mode)."""
    return {
        "schema": ARCHIVE_SCHEMA, "agency": agency.slug, "name": agency.name,
        "fqdn": agency.fqdn, "host": host.name,
        "site_dir": str(site.site_dir(agency, host)),
        "vhost_path": str(site.vhost_path(agency, host)),
        "created_at": when.isoformat(timespec="seconds"), "operator": current_operator(),
        "command": command,
        "files": {rel: _file_entry(f) for rel, f in sorted(snapshot.files.items())},
        "dirs": {rel: archived_mode(mode, folder=True)
                 for rel, mode in sorted(snapshot.dirs.items())},
        "skipped": list(snapshot.skipped),
        "vhost": _file_entry(snapshot.vhost) if snapshot.vhost else None,
        "cert": None if cert is None else {
            "serial": cert.serial_hex, "names": list(cert.names),
            "not_after": cert.not_after.isoformat(), "issuer": cert.issuer},
        "dns": [] if dns_plan is None else [
            {"name": c.name, "type": c.rdtype, "values": list(c.old)}
            for c in dns_plan.plan if c.action == "delete"],
    }


def _add_member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600,
                mtime: float = 0.0) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(mtime)
    tar.addfile(info, io.BytesIO(data))


def build_archive(manifest: Mapping[str, Any], files: Mapping[str, bytes],
                  vhost: bytes | None) -> bytes:
    """The tar.gz: manifest.json, site/<path> for every file, vhost/<slug>.conf."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add_member(tar, MANIFEST_MEMBER,
                    json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n")
        for rel, entry in manifest["files"].items():
            _add_member(tar, SITE_PREFIX + rel, files[rel], entry["mode"], entry["mtime"])
        if manifest["vhost"] is not None and vhost is not None:
            _add_member(tar, f"{VHOST_PREFIX}{manifest['agency']}.conf", vhost,
                        manifest["vhost"]["mode"], manifest["vhost"]["mtime"])
    return buffer.getvalue()


@dataclass(frozen=True)
class ArchivedSite:
    """An archive read back and checked: manifest, file contents, vhost."""

    path: Path
    manifest: Mapping[str, Any]
    files: Mapping[str, bytes] = field(repr=False)
    vhost: bytes | None = field(repr=False)

    @property
    def agency(self) -> str:
        return self.manifest["agency"]

    def site_files(self) -> dict[str, SiteFile]:
        """The archived files with their modes and mtimes, ready to be written back."""
        return {rel: SiteFile(e["sha256"], e["mode"], e["size"], e["mtime"], self.files[rel])
                for rel, e in self.manifest["files"].items()}

    def covers(self, snapshot: SiteSnapshot) -> bool:
        """True when everything the host has now is in this archive (content and mode)."""
        return covers(self.manifest, snapshot)


def covers(manifest: Mapping[str, Any], snapshot: SiteSnapshot) -> bool:
    archived = manifest["files"]
    for rel, current in snapshot.files.items():
        entry = archived.get(rel)
        if entry is None or (entry["sha256"], entry["mode"]) != (current.sha256,
                                                                 archived_mode(current.mode)):
            return False
    vhost = manifest["vhost"]
    return snapshot.vhost is None or (vhost is not None
                                      and vhost["sha256"] == snapshot.vhost.sha256)


def _refused(origin: Path, why: str) -> UsageError:
    return UsageError(f"{origin}: not a usable offboarding archive: {why}",
                      hint="use the .tar.gz that 'provisioner offboard' wrote")


def read_archive(data: bytes, origin: Path) -> ArchivedSite:
    """Parse an archive and check every member against the manifest's hashes.

    Raises UsageError naming the file when it is not a complete provisioner archive.
    """
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile() or member.name.startswith("/") or \
                        ".." in member.name.split("/"):
                    raise _refused(origin, f"unexpected member {member.name!r}")
                members[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _refused(origin, str(exc) or type(exc).__name__) from None
    return archived_site(members, origin)


def archived_site(members: dict[str, bytes], origin: Path) -> ArchivedSite:
    """The archive's members (manifest.json, site/..., vhost/...; consumed) checked against
    the manifest's hashes: the one check for an archive and for a site restored from a
    backup, which holds the same members as files."""
    try:
        manifest = json.loads(members.pop(MANIFEST_MEMBER))
    except (KeyError, ValueError) as exc:
        raise _refused(origin, str(exc) or type(exc).__name__) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != ARCHIVE_SCHEMA:
        raise _refused(origin, "unknown manifest schema")
    files = {}
    for rel, entry in manifest["files"].items():
        content = members.pop(SITE_PREFIX + rel, None)
        if content is None or hashlib.sha256(content).hexdigest() != entry["sha256"]:
            raise _refused(origin, f"site/{rel} is missing or differs from its recorded sha256")
        files[rel] = content
    vhost = members.pop(f"{VHOST_PREFIX}{manifest['agency']}.conf", None)
    if (manifest["vhost"] is None) != (vhost is None) or (
            vhost is not None and hashlib.sha256(vhost).hexdigest() != manifest["vhost"]["sha256"]):
        raise _refused(origin, "the vhost is missing or differs from its recorded sha256")
    if members:
        raise _refused(origin, f"members not in the manifest: {', '.join(sorted(members)[:5])}")
    return ArchivedSite(origin, manifest, files, vhost)


# =========================================================================== archive files


def checksum_path(archive: Path) -> Path:
    return archive.with_name(archive.name + CHECKSUM_SUFFIX)


def load_archive(path: Path) -> ArchivedSite:
    """Read an archive, verify it against the checksum file beside it, check every member.

    UsageError (exit 2) when the checksum is missing or does not match: nothing is used.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        listed = checksum_path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"{exc.filename}: cannot read: {exc.strerror}",
                         hint="the archive and its .sha256 file must be side by side") from None
    expected = parse_checksum(listed, path.name)
    if expected is None:
        raise UsageError(f"{checksum_path(path)}: no sha256 for {path.name}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise UsageError(f"{path}: checksum mismatch (sha256 {actual[:16]}..., the .sha256 "
                         f"file says {expected[:16]}...): refusing a damaged or altered archive")
    return read_archive(data, path)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Temp file with its final mode from the first byte, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_archive(directory: Path, slug: str, when: dt.datetime, data: bytes) -> Path:
    """Write the archive (0600) and its checksum file; the checksum lands first, so an
    archive on disk always has one. Leftovers of a killed run are removed (the caller
    holds the inventory lock: no other run writes here)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob(f".{slug}-*.part"):
        stale.unlink(missing_ok=True)
    attempt = 0
    while (path := directory / archive_name(slug, when, attempt)).exists():
        attempt += 1
    try:
        _write_atomic(checksum_path(path), checksum_text(path.name, data).encode(), 0o600)
        _write_atomic(path, data, 0o600)
    except OSError as exc:
        raise ProvisionerError(f"archive {path}: cannot write: {exc.strerror}",
                               hint="check free space and permissions of the archive folder "
                                    "(--archive DIR)") from None
    return path


def find_archives(directory: Path, slug: str) -> list[Path]:
    """The agency's archives in ``directory``, newest first."""
    pattern = _archive_pattern(slug)
    try:
        found = [(match, path) for path in directory.iterdir()
                 if (match := pattern.fullmatch(path.name))]
    except FileNotFoundError:
        return []
    found.sort(key=lambda item: (item[0]["stamp"], int(item[0]["attempt"] or 0)), reverse=True)
    return [path for _match, path in found]


def covering_archive(directory: Path, slug: str, snapshot: SiteSnapshot) -> ArchivedSite | None:
    """The newest intact archive that holds everything the host has now (None: none does)."""
    for path in find_archives(directory, slug):
        try:
            archived = load_archive(path)
        except UsageError:
            continue  # damaged: never relied on
        if archived.agency == slug and archived.covers(snapshot):
            return archived
    return None


# =========================================================================== plans (pure)


def archive_change(agency: Agency, snapshot: SiteSnapshot | None, archived: Path | None,
                   directory: Path) -> Change:
    if snapshot is None:
        return Change(agency.slug, "archive", "noop", agency.fqdn,
                      reason="hosted elsewhere: no site on this inventory's hosts")
    if archived is not None:
        return Change(agency.slug, "archive", "noop", str(archived),
                      reason="already archived: the archive holds everything on the host")
    what = [f"{len(snapshot.files)} files, {snapshot.size} bytes"]
    if snapshot.vhost is not None:
        what.append("vhost")
    skipped = f"; not archived (not regular files): {', '.join(snapshot.skipped[:5])}" \
        if snapshot.skipped else ""
    return Change(agency.slug, "archive", "create", str(directory), new=tuple(what),
                  reason="written and verified before anything is removed" + skipped)


def removal_changes(agency: Agency, host: Host | None, snapshot: SiteSnapshot | None,
                    cert: CertInfo | None, cert_present: bool, shared_cert: bool,
                    revoke: bool) -> list[Change]:
    """The vhost, site and certificate rows of an offboarding plan."""
    slug = agency.slug
    if host is None or snapshot is None:
        return [Change(slug, kind, "noop", agency.fqdn, reason="hosted elsewhere")
                for kind in ("vhost", "site", "cert")]
    rows = [Change(slug, "vhost", "delete", str(site.vhost_path(agency, host)),
                   reason="nginx -t without it, then one reload")
            if snapshot.vhost else
            Change(slug, "vhost", "noop", str(site.vhost_path(agency, host)), reason="no vhost"),
            Change(slug, "site", "delete", str(site.site_dir(agency, host)),
                   old=(f"{len(snapshot.files)} files",), reason="after the archive is verified")
            if snapshot.exists else
            Change(slug, "site", "noop", str(site.site_dir(agency, host)),
                   reason="no site folder")]
    if shared_cert:
        rows.append(Change(slug, "cert", "noop", agency.fqdn,
                           reason="shared wildcard certificate: kept for the other agencies"))
    elif cert_present:
        serial = (f"serial {cert.serial_hex}",) if cert else ("unreadable",)
        how = "revoked at the CA, then its files deleted" if revoke and cert else \
            "files deleted (not revoked: acme_revoke_on_offboard is false)" if not revoke else \
            "files deleted (unreadable: cannot be revoked)"
        rows.append(Change(slug, "cert", "delete", agency.fqdn, old=serial, reason=how))
    else:
        rows.append(Change(slug, "cert", "noop", agency.fqdn, reason="no certificate installed"))
    return rows


def registry_change(agency: Agency, status: str) -> Change:
    current = "offboarded" if agency.offboarded else "active"
    if current == status:
        return Change(agency.slug, "registry", "noop", str(agency.source),
                      reason=f"already {status}")
    return Change(agency.slug, "registry", "update", str(agency.source), old=(current,),
                  new=(status,), reason="status line only: the file and its comments stay")


def restore_actions(manifest_files: Mapping[str, Mapping[str, Any]],
                    snapshot: SiteSnapshot) -> dict[str, str]:
    """Per archived file: create (absent), update (same content, other mode), noop
    (identical) or conflict (other content on the host: never overwritten)."""
    actions = {}
    for rel, entry in manifest_files.items():
        current = snapshot.files.get(rel)
        if current is None:
            actions[rel] = "create"
        elif current.sha256 != entry["sha256"]:
            actions[rel] = "conflict"
        else:
            actions[rel] = "noop" if current.mode == archived_mode(entry["mode"]) else "update"
    return actions


# =========================================================================== plan and result data


@dataclass(frozen=True)
class OffboardPlan:
    agency: Agency
    host: Host | None  # None: hosted elsewhere
    archive_dir: Path
    snapshot: SiteSnapshot | None
    archived: Path | None  # an intact archive that already holds the host's content
    cert: CertInfo | None
    dns: DnsPlan
    plan: Plan

    @property
    def has_changes(self) -> bool:
        return self.plan.has_changes

    def to_dict(self) -> dict[str, Any]:
        return {"agency": self.agency.slug, "host": self.host.name if self.host else None,
                "archive_dir": str(self.archive_dir),
                "archived": str(self.archived) if self.archived else None,
                "cert_serial": self.cert.serial_hex if self.cert else None,
                "skipped": list(self.snapshot.skipped) if self.snapshot else [],
                "changes": [c.to_dict() for c in self.plan], "counts": self.plan.counts()}


@dataclass(frozen=True)
class RunResult:
    """Outcomes of an offboarding or restore, one per step that ran, in order."""

    outcomes: tuple[Outcome, ...]
    archive: Path | None = None
    steps: tuple[str, ...] = OFFBOARD_STEPS

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)

    @property
    def not_run(self) -> tuple[str, ...]:
        """Steps left for a re-run (a failed step stops the run)."""
        done = {o.kind for o in self.outcomes}
        return tuple(s for s in self.steps if s not in done)

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "archive": str(self.archive) if self.archive else None,
                "outcomes": [o.to_dict() for o in self.outcomes],
                "not_run": list(self.not_run)}


@dataclass(frozen=True)
class RestorePlan:
    archive: ArchivedSite
    agency: Agency
    host: Host
    actions: Mapping[str, str]  # archived path -> create / update / noop
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive.path), "agency": self.agency.slug,
                "host": self.host.name, "archived_host": self.archive.manifest["host"],
                "created_at": self.archive.manifest["created_at"],
                "changes": [c.to_dict() for c in self.plan], "counts": self.plan.counts()}


RESTORE_STEPS = ("site", "registry", "dns", "web", "tls", "verify", "vhost")


# =========================================================================== sessions


class _LockedRun(onboarding.LockedRun):
    """SSH connections (each preflighted), the DNS client, and (with ``command``) the
    inventory lock."""

    def __init__(self, inventory: Inventory, report: Report = _quiet, *,
                 command: str | None = None, break_lock: bool = False):
        super().__init__(inventory, report, command=command, break_lock=break_lock)
        self._clients: dict[str, HostClient] = {}

    def client(self, host: Host) -> HostClient:
        """The connected client of a host whose preflight passed (HostError when it cannot
        be reached, SafetyError naming the problems when its preflight fails)."""
        if host.name not in self._clients:
            client = self._stack.enter_context(
                HostClient(host, self.inventory.settings.known_hosts_file))
            preflight = client.preflight()
            if not preflight.ok:
                raise SafetyError(f"host {host.name} cannot be used: "
                                  + "; ".join(preflight.problems),
                                  hint="fix the host, then re-run; nothing was changed")
            self._clients[host.name] = client
        return self._clients[host.name]

    def audit(self, entries: Sequence[AuditEntry]) -> None:
        if self.command is not None and entries:
            AuditLog(self.inventory.state_dir).record(*entries)

    def step_entries(self, changes: Sequence[Change], outcome: Outcome) -> list[AuditEntry]:
        """One entry per planned change of the step, with the step's result; a step that
        did something unplanned (or failed with nothing planned) gets one entry of its own."""
        planned = [c for c in changes if c.mutating]
        failed = outcome.status == "failed"
        done = {"done": outcome.detail} if outcome.status == "changed" else {}
        entries = [AuditEntry(command=self.command, agency=c.agency, kind=c.kind,
                              action=c.action,
                              change={"name": c.name, "type": c.rdtype, "old": list(c.old),
                                      "new": list(c.new), **done},
                              result=outcome.status, reason=outcome.detail if failed else None)
                   for c in planned]
        if not entries and outcome.status != "ok":
            entries.append(AuditEntry(command=self.command, agency=outcome.agency,
                                      kind=outcome.kind, action="apply", change=outcome.detail,
                                      result=outcome.status,
                                      reason=outcome.detail if failed else None))
        return entries


def _own_cert_dir(inventory: Inventory, agency: Agency, host: Host) -> Path | None:
    """The folder of the agency's own certificate; None when it shares a wildcard one.
    (Certificate targets exist only for hosted agencies: asked as if still active.)"""
    targets = cert_targets(inventory, [replace(agency, offboarded=False)])
    if not targets or targets[0].key != agency.slug:
        return None
    return site.cert_paths(agency, host, inventory.settings).fullchain.parent


def _cert_info(pem: str | None) -> CertInfo | None:
    if not pem:
        return None
    try:
        return cert_info(pem.encode())
    except ProvisionerError:
        return None


class Offboarding(_LockedRun):
    """One offboarding: ``plan`` reads (host, zone, archives), ``apply`` carries it out."""

    def plan(self, agency: Agency, archive_dir: Path) -> OffboardPlan:
        host = self.inventory.hosts[agency.host] if agency.host else None
        dns_plan = plan_dns(self.inventory, [agency], remove=True, preflight=True,
                            client=self.dns)
        snapshot = cert = archived = cert_dir = pem = None
        changes = [archive_change(agency, None, None, archive_dir)]
        if host is not None:
            client = self.client(host)
            snapshot = client.site_snapshot(agency, content=False)
            covering = covering_archive(archive_dir, agency.slug, snapshot)
            archived = covering.path if covering else None
            cert_dir = _own_cert_dir(self.inventory, agency, host)
            pem = self._cert_pem(client, agency, host) if cert_dir else None
            cert = _cert_info(pem)
            changes = [archive_change(agency, snapshot, archived, archive_dir)]
        changes += list(dns_plan.plan)
        changes += removal_changes(agency, host, snapshot, cert,
                                   cert_present=bool(pem),
                                   shared_cert=host is not None and cert_dir is None,
                                   revoke=self.inventory.settings.acme.revoke_on_offboard)
        recorded = access.load_accounts(self.inventory.state_dir).get(agency.slug)
        if recorded is not None:  # removed in the site step, before the last comparison
            changes.append(Change(agency.slug, "access", "delete", recorded.account,
                                  reason=f"SFTP account on {recorded.host}"))
        changes.append(registry_change(agency, "offboarded"))
        return OffboardPlan(agency, host, archive_dir, snapshot, archived, cert, dns_plan,
                            Plan(changes))

    def _cert_pem(self, client: HostClient, agency: Agency, host: Host) -> str | None:
        fullchain = site.cert_paths(agency, host, self.inventory.settings).fullchain
        return client.certificates([fullchain])[fullchain]

    def apply(self, oplan: OffboardPlan, *,
              propagation_timeout: float = DEFAULT_PROPAGATION_TIMEOUT) -> RunResult:
        """Run the steps in order; the first failure stops the run (a re-run resumes)."""
        state = _OffboardState(oplan, propagation_timeout)
        steps = {"archive": self._archive, "dns": self._dns, "vhost": self._vhost,
                 "site": self._site, "cert": self._cert, "registry": self._registry}
        outcomes = []
        for kind in OFFBOARD_STEPS:
            try:
                outcome = steps[kind](state)
            except ProvisionerError as exc:
                outcome = Outcome(oplan.agency.slug, kind, "failed", str(exc))
            outcomes.append(outcome)
            self.audit(self.step_entries(oplan.plan.of_kind(kind), outcome))
            self.report(f"{kind}: {outcome.status}: {outcome.detail}")
            if outcome.status == "failed":
                break
        return RunResult(tuple(outcomes), state.archive.path if state.archive else None)

    # ------------------------------------------------------------------ steps

    def _archive(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if oplan.host is None:
            return Outcome(slug, "archive", "ok", "hosted elsewhere: nothing to archive")
        snapshot = self.client(oplan.host).site_snapshot(oplan.agency, content=True)
        state.archive = covering_archive(oplan.archive_dir, slug, snapshot)
        if state.archive is not None:
            return Outcome(slug, "archive", "ok", f"already archived in {state.archive.path}")
        check_received(snapshot, oplan.host.name)
        now = _now()
        manifest = make_manifest(oplan.agency, oplan.host, snapshot, oplan.cert, oplan.dns, now,
                                 self.command)
        data = build_archive(manifest, {rel: f.data for rel, f in snapshot.files.items()},
                             snapshot.vhost.data if snapshot.vhost else None)
        path = write_archive(oplan.archive_dir, slug, now, data)
        written = load_archive(path)  # read back from disk: checksum and every member
        if not written.covers(snapshot):
            raise ProvisionerError(f"archive {path} does not match what the host has",
                                   hint="re-run; nothing was removed")
        state.archive = written
        return Outcome(slug, "archive", "changed",
                       f"{path} ({len(snapshot.files)} files, {len(data)} bytes, verified)")

    def _dns(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if not oplan.dns.plan.has_changes:
            return self._dns_in_sync(state)
        result = apply_dns(self.inventory, oplan.dns, client=self.dns,
                           propagation_timeout=state.propagation_timeout)
        return next((o for o in result.outcomes if o.agency == slug),
                    Outcome(slug, "dns", "ok", "records up to date"))

    def _dns_in_sync(self, state: _OffboardState) -> Outcome:
        """Nothing to delete at the primary: still, every nameserver must have caught up
        with it (a re-run after a propagation timeout checks the lagging server again)."""
        slug = state.plan.agency.slug
        kept = [c.reason for c in state.plan.dns.plan if "not ours" in c.reason]
        serial = self.dns.soa_serial()
        try:
            self.dns.wait_for_propagation([], serial, timeout=state.propagation_timeout)
        except PropagationTimeout as exc:
            return Outcome(slug, "dns", "failed", f"no records to delete, but {exc}")
        return Outcome(slug, "dns", "ok", (kept[0] if kept else "no records owned here")
                       + f"; every nameserver serves serial {serial}")

    def _vhost(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if oplan.host is None:
            return Outcome(slug, "vhost", "ok", "hosted elsewhere")
        removed = self.client(oplan.host).remove_vhost(oplan.agency)
        return Outcome(slug, "vhost", "changed" if removed else "ok",
                       "removed (nginx -t passed, reloaded)" if removed else "no vhost")

    def _site(self, state: _OffboardState) -> Outcome:
        oplan, slug = state.plan, state.plan.agency.slug
        if oplan.host is None:
            return Outcome(slug, "site", "ok", "hosted elsewhere")
        client = self.client(oplan.host)
        removed = self._remove_access(oplan.agency)  # no upload lands after the check below
        current = client.site_snapshot(oplan.agency, content=False)
        if current.files and (state.archive is None or not state.archive.covers(current)):
            raise SafetyError("the site changed after it was archived: not removed",
                              hint="re-run: the new content is archived first")
        entries = client.remove_tree(site.site_dir(oplan.agency, oplan.host),
                                     oplan.host.web_root)
        if entries is None:
            return Outcome(slug, "site", "changed" if removed else "ok",
                           removed + "no site folder")
        return Outcome(slug, "site", "changed", f"{removed}deleted {entries} entries")

    def _remove_access(self, agency: Agency) -> str:
        """The agency's SFTP account goes (its host's drop-in rewritten without it); what
        was done, as the start of the site step's detail."""
        state_dir = self.inventory.state_dir
        recorded = access.load_accounts(state_dir)
        if agency.slug not in recorded:
            return ""
        host_name = recorded[agency.slug].host
        wanted = access_plan.host_access(self.inventory, host_name, recorded,
                                         leaving=[agency.slug])
        self.client(self.inventory.hosts[host_name]).content_access(wanted.request())
        access.save_accounts(state_dir, wanted.recorded(recorded))
        return f"SFTP account {recorded[agency.slug].account} removed; "

    def _cert(self, state: _OffboardState) -> Outcome:
        oplan, agency = state.plan, state.plan.agency
        if oplan.host is None:
            return Outcome(agency.slug, "cert", "ok", "hosted elsewhere")
        cert_dir = _own_cert_dir(self.inventory, agency, oplan.host)
        if cert_dir is None:
            return Outcome(agency.slug, "cert", "ok", "shared wildcard certificate kept")
        client = self.client(oplan.host)
        pem = self._cert_pem(client, agency, oplan.host)
        done = []
        if pem and _cert_info(pem) and self.inventory.settings.acme.revoke_on_offboard:
            done.append(revoke_certificate(self.inventory, pem))
        if client.remove_tree(cert_dir, oplan.host.tls_dir) is not None:
            done.append(f"deleted {cert_dir}")
        record = records_dir(self.inventory.state_dir) / f"{agency.slug}.json"
        if record.exists():
            record.unlink()
            done.append("controller record removed")
        return Outcome(agency.slug, "cert", "changed" if done else "ok",
                       "; ".join(done) or "no certificate installed")

    def _registry(self, state: _OffboardState) -> Outcome:
        agency = state.plan.agency
        name = state.archive.path.name if state.archive else "none"
        note = f"{_now():%Y-%m-%d} by {current_operator()}, archive {name}"
        if not set_registry_status(agency, "offboarded", note):
            return Outcome(agency.slug, "registry", "ok", "already offboarded")
        return Outcome(agency.slug, "registry", "changed", f"{agency.source}: status offboarded")


@dataclass
class _OffboardState:
    plan: OffboardPlan
    propagation_timeout: float
    archive: ArchivedSite | None = None


class Restoring(_LockedRun):
    """One restore: ``plan`` checks the archive and the host, ``apply`` writes the files
    back, marks the agency active and onboards it."""

    def plan(self, archive_path: Path) -> RestorePlan:
        return self.plan_archived(load_archive(archive_path))

    def plan_archived(self, archived: ArchivedSite) -> RestorePlan:
        """The plan for an archive already read and checked (a file, or a backup's copy)."""
        archive_path = archived.path
        slug = archived.agency
        agency = self.inventory.agencies.get(slug)
        if agency is None:
            raise UsageError(f"{archive_path}: agency {slug!r} is not in the inventory",
                             hint=f"put its registry file back (agencies/{slug}.yml) first")
        if agency.host is None:
            raise UsageError(f"{slug} is hosted elsewhere now ({agency.external_url})",
                             hint="set 'host:' in its registry file to restore it here")
        host = self.inventory.hosts[agency.host]
        snapshot = self.client(host).site_snapshot(agency, content=False)
        actions = restore_actions(archived.manifest["files"], snapshot)
        conflicts = sorted(rel for rel, action in actions.items() if action == "conflict")
        if conflicts:
            raise SafetyError(f"{slug}: {len(conflicts)} file(s) on {host.name} differ from the "
                              f"archive and would be overwritten: {', '.join(conflicts[:5])}",
                              hint="move them away (or offboard the agency first); nothing "
                                   "was changed")
        counts = {a: sum(1 for v in actions.values() if v == a) for a in ("create", "update")}
        where = str(site.site_dir(agency, host))
        moved = f" (archived from {archived.manifest['host']})" \
            if archived.manifest["host"] != host.name else ""
        site_row = Change(slug, "site", "create" if counts["create"] else
                          "update" if counts["update"] else "noop", where,
                          new=tuple(f"{n} {a}" for a, n in counts.items() if n),
                          reason=(f"byte for byte from {archived.path.name}{moved}"
                                  if any(counts.values()) else "identical to the archive"))
        onboard_row = Change(slug, "onboard", "create", agency.fqdn,
                             reason="then onboarding: DNS record, vhost, a new certificate, "
                                    "verification")
        return RestorePlan(archived, agency, host, actions,
                           Plan((site_row, registry_change(agency, "active"), onboard_row)))

    def apply(self, rplan: RestorePlan, *,
              progress: ansible.ProgressCallback | None = None) -> RunResult:
        """Files, registry, then onboarding (its outcomes included); the first failure
        stops the run."""
        slug = rplan.agency.slug
        outcomes: list[Outcome] = []

        def run(kind: str, step: Callable[[], Outcome]) -> bool:
            try:
                outcome = step()
            except ProvisionerError as exc:
                outcome = Outcome(slug, kind, "failed", str(exc))
            outcomes.append(outcome)
            self.audit(self.step_entries(rplan.plan.of_kind(kind), outcome))
            self.report(f"{kind}: {outcome.status}: {outcome.detail}")
            return outcome.status != "failed"

        if not (run("site", lambda: self._files(rplan)) and
                run("registry", lambda: self._registry(rplan))):
            return RunResult(tuple(outcomes), rplan.archive.path, RESTORE_STEPS)
        inventory = load_inventory(self.inventory.root, self.inventory.state_dir)
        agency = inventory.agencies[slug]
        with onboarding.Session(inventory, self.report, audit_as=self.command) as session:
            result = session.apply(session.plan([agency]), progress=progress)
        outcomes += [o for o in result.outcomes if o.agency == slug]
        if not result.failed:
            run("vhost", lambda: self._compare_vhost(rplan, agency))
        return RunResult(tuple(outcomes), rplan.archive.path, RESTORE_STEPS)

    def _files(self, rplan: RestorePlan) -> Outcome:
        written, same = self.client(rplan.host).restore_site(
            rplan.agency, rplan.archive.site_files(), rplan.archive.manifest["dirs"])
        return Outcome(rplan.agency.slug, "site", "changed" if written else "ok",
                       f"{written} file(s) written, {same} already identical "
                       f"(from {rplan.archive.path.name})")

    def _registry(self, rplan: RestorePlan) -> Outcome:
        agency = rplan.agency
        note = f"restored {_now():%Y-%m-%d} by {current_operator()} from {rplan.archive.path.name}"
        if not set_registry_status(agency, "active", note):
            return Outcome(agency.slug, "registry", "ok", "already active")
        return Outcome(agency.slug, "registry", "changed", f"{agency.source}: status active")

    def _compare_vhost(self, rplan: RestorePlan, agency: Agency) -> Outcome:
        archived = rplan.archive.manifest["vhost"]
        now = self.client(rplan.host).site_snapshot(agency, content=False).vhost
        if archived is None:
            return Outcome(agency.slug, "vhost", "ok", "generated (none was archived)")
        if now is not None and now.sha256 == archived["sha256"]:
            return Outcome(agency.slug, "vhost", "ok", "identical to the archived vhost")
        return Outcome(agency.slug, "vhost", "ok", "generated from the inventory; differs from "
                                                    "the archived one (the inventory changed)")


def archive_dir_of(inventory: Inventory, given: Path | None) -> Path:
    return (given or inventory.state_dir / ARCHIVES_DIR).resolve()

