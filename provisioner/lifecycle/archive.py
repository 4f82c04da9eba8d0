"""The offboarding archive: what it holds, its manifest, writing it and reading it back.

An archive is ``<archive_dir>/<slug>-<UTC time>.tar.gz`` (0600, written atomically, its
sha256 in ``<name>.sha256`` beside it, in ``sha256sum`` format): ``manifest.json``
(agency, host, paths, every file's sha256 and mode, masked: files at most 0644, folders
0755, never setuid/setgid/sticky; certificate serial, DNS records), ``site/<path>`` for
every file and ``vhost/<slug>.conf``. Reading one back checks the checksum file and
every member against the manifest; a backup's staged site holds the same members as
files and is checked by the same code (``archived_site``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ProvisionerError, UsageError
from ..hosts import hostlib
from ..hosts.agent import SiteFile, SiteSnapshot
from ..registry.models import Agency, Host
from ..safety.audit import current_operator
from ..site import render as site

if TYPE_CHECKING:
    from ..dns.step import DnsPlan
    from ..tls.certs import CertInfo

ARCHIVE_SCHEMA = "provisioner/offboard-archive/v1"
MANIFEST_MEMBER = "manifest.json"
SITE_PREFIX = "site/"
VHOST_PREFIX = "vhost/"
ARCHIVE_SUFFIX = ".tar.gz"
CHECKSUM_SUFFIX = ".sha256"
ARCHIVES_DIR = "archives"


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


def write_archive(directory: Path, slug: str, when: dt.datetime, data: bytes) -> Path:
    """Write the archive (0600) and its checksum file; the checksum lands first, so an
    archive on disk always has one. Leftovers of a killed run (hidden temp files) are
    removed (the caller holds the inventory lock: no other run writes here)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob(f".{slug}-*"):
        stale.unlink(missing_ok=True)
    attempt = 0
    while (path := directory / archive_name(slug, when, attempt)).exists():
        attempt += 1
    try:
        hostlib.write_atomic(checksum_path(path), checksum_text(path.name, data).encode(),
                             0o600, sync_folder=True)
        hostlib.write_atomic(path, data, 0o600, sync_folder=True)
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
