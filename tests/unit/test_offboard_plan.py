"""Offboarding and restore, the parts without servers: the registry status edit, the
archive format and files, what an archive covers, the plan rows, and the host agent's
snapshot / removal / restore functions on a tmp dir."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from provisioner.errors import ProvisionerError, UsageError
from provisioner.hosts.agent import SiteFile, SiteSnapshot, host_agent
from provisioner.lifecycle import archive as archiving
from provisioner.lifecycle import offboard, registry_status, restore
from provisioner.registry.load import load_inventory

from .conftest import SAMPLE

agent = host_agent()

WHEN = dt.datetime(2025, 3, 1, 8, 0, 0, tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------- registry status

AGENCY = """\
# Dinas Kesehatan (comment kept)
slug: dinkes   # the file name
name: Dinas Kesehatan
services:
- name: Izin
  status: internal   # a nested key, never touched
"""


@pytest.mark.parametrize("text, status, expected_line, after", [
    (AGENCY, "offboarded", "status: offboarded", "slug: dinkes   # the file name"),
    (AGENCY.replace("name: Dinas", "status: active  # set by hand\nname: Dinas", 1),
     "offboarded", "status: offboarded", "slug: dinkes   # the file name"),
    ("slug: dinkes\nstatus: offboarded  # 2025 by ayu\nname: X\n", "active", "status: active",
     "slug: dinkes"),
    ("name: X\nslug: dinkes", "offboarded", "status: offboarded", "slug: dinkes"),
    ("name: X\r\nslug: dinkes\r\nemail: a@b.id\r\n", "offboarded", "status: offboarded",
     "slug: dinkes"),
])
def test_status_is_one_line_and_everything_else_stays(text, status, expected_line, after):
    new = registry_status.with_status(text, status)

    lines = new.splitlines()
    assert lines[lines.index(after) + 1] == expected_line
    assert [line for line in lines if line != expected_line] == \
        [line for line in text.splitlines() if not line.startswith("status:")]
    assert yaml.safe_load(new) == {**yaml.safe_load(text), "status": status}
    assert ("\r\n" in new) == ("\r\n" in text)


def test_status_note_is_a_single_comment():
    new = registry_status.with_status(AGENCY, "offboarded", "2025-03-01 by ayu,\narchive x.tar.gz")

    assert "status: offboarded  # 2025-03-01 by ayu, archive x.tar.gz\n" in new
    assert yaml.safe_load(new)["status"] == "offboarded"


@pytest.mark.parametrize("text", [
    "slug: dinkes\nstatus: >-\n  active\nname: X\n",  # a folded value: one line cannot set it
    "slug: dinkes\nstatus:\n  - active\n",
    "- not a mapping\n",
])
def test_status_edit_that_cannot_be_one_line_is_refused(text):
    with pytest.raises(ProvisionerError):
        registry_status.with_status(text, "offboarded")


def test_registry_file_keeps_its_mode_and_comments(tmp_path):
    inventory = _sample_inventory(tmp_path)
    agency = inventory.agencies["dinkes"]
    os.chmod(agency.source, 0o640)
    before = agency.source.read_text(encoding="utf-8")

    assert registry_status.set_registry_status(agency, "offboarded", "note") is True
    assert registry_status.set_registry_status(agency, "offboarded", "note") is False

    after = agency.source.read_text(encoding="utf-8")
    assert stat.S_IMODE(agency.source.stat().st_mode) == 0o640
    assert [l for l in after.splitlines() if not l.startswith("status:")] == before.splitlines()
    assert load_inventory(inventory.root, inventory.state_dir).agencies["dinkes"].offboarded


# --------------------------------------------------------------------------- archives

FILES = {"index.html": b"<h1>Dinkes</h1>\n", "layanan/izin.html": b"izin\n",
         ".provisioner-manifest.json": b"{}\n", "berkas/laporan.pdf": bytes(range(256))}
VHOST = b"server { server_name dinkes.paserkab.go.id; }\n"


def snapshot(files=FILES, vhost=VHOST, modes=None, exists=True) -> SiteSnapshot:
    modes = modes or {}
    return SiteSnapshot(
        exists=exists,
        files={rel: SiteFile(hashlib.sha256(data).hexdigest(), modes.get(rel, 0o644), len(data),
                             1_700_000_000.5, data) for rel, data in files.items()},
        dirs={"layanan": 0o755, "berkas": 0o750}, skipped=("tautan",),
        vhost=SiteFile(hashlib.sha256(vhost).hexdigest(), 0o644, len(vhost), 1.0, vhost)
        if vhost is not None else None)


def manifest_of(snap: SiteSnapshot, tmp_path: Path) -> dict:
    inventory = _sample_inventory(tmp_path)
    agency = inventory.agencies["dinkes"]
    return archiving.make_manifest(agency, inventory.hosts[agency.host], snap, None, None, WHEN,
                                  "provisioner offboard dinkes")


def test_archive_round_trip_keeps_bytes_modes_and_times(tmp_path):
    snap = snapshot(modes={"berkas/laporan.pdf": 0o600})
    manifest = manifest_of(snap, tmp_path)
    data = archiving.build_archive(manifest, FILES, VHOST)

    archived = archiving.read_archive(data, tmp_path / "a.tar.gz")

    assert archived.files == FILES and archived.vhost == VHOST
    restored = archived.site_files()
    assert restored["berkas/laporan.pdf"].mode == 0o600
    assert restored["index.html"].mtime == 1_700_000_000.5
    assert archived.manifest["dirs"] == {"berkas": 0o750, "layanan": 0o755}
    assert archived.manifest["skipped"] == ["tautan"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert tar.getmember("site/berkas/laporan.pdf").mode == 0o600
    assert names[0] == "manifest.json" and "vhost/dinkes.conf" in names
    assert not any("PRIVATE KEY" in name for name in names)


def test_an_archive_never_records_setuid_setgid_or_writable_modes(tmp_path):
    snap = snapshot(modes={"index.html": 0o4755, "berkas/laporan.pdf": 0o2666})
    snap = dataclasses.replace(snap, dirs={"layanan": 0o1777, "berkas": 0o2750})
    manifest = manifest_of(snap, tmp_path)

    archived = archiving.read_archive(archiving.build_archive(manifest, FILES, VHOST),
                                     tmp_path / "a.tar.gz")

    assert archived.manifest["files"]["index.html"]["mode"] == 0o644
    assert archived.manifest["files"]["berkas/laporan.pdf"]["mode"] == 0o644
    assert archived.manifest["dirs"] == {"berkas": 0o750, "layanan": 0o755}
    assert archived.covers(snap)  # the host's own modes are what the archive masks


def _retar(data: bytes, change) -> bytes:
    """The archive with its members passed through ``change(name, bytes) -> (name, bytes)``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src.getmembers():
            name, content = change(member.name, src.extractfile(member).read())
            if name is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(content)
            dst.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.mark.parametrize("change, why", [
    (lambda n, b: (n, b + b"x") if n == "site/index.html" else (n, b), "site/index.html"),
    (lambda n, b: (None, b) if n == "site/layanan/izin.html" else (n, b), "site/layanan/izin.html"),
    (lambda n, b: (n, b"# edited\n") if n.startswith("vhost/") else (n, b), "vhost"),
    (lambda n, b: ("../escape", b) if n == "site/index.html" else (n, b), "unexpected member"),
    (lambda n, b: (n, b.replace(b"offboard-archive/v1", b"other/v9"))
     if n == "manifest.json" else (n, b), "schema"),
    (lambda n, b: (None, b) if n == "manifest.json" else (n, b), "manifest.json"),
])
def test_an_archive_that_differs_from_its_manifest_is_refused(tmp_path, change, why):
    data = archiving.build_archive(manifest_of(snapshot(), tmp_path), FILES, VHOST)

    with pytest.raises(UsageError) as raised:
        archiving.read_archive(_retar(data, change), tmp_path / "a.tar.gz")
    assert why in str(raised.value) and raised.value.exit_code == 2


def test_written_archive_is_private_with_a_checksum_sha256sum_accepts(tmp_path):
    data = archiving.build_archive(manifest_of(snapshot(), tmp_path), FILES, VHOST)
    folder = tmp_path / "archives"
    folder.mkdir()
    (folder / ".dinkes-20250301T070000Z.tar.gz.part").write_bytes(b"left by a killed run")

    first = archiving.write_archive(folder, "dinkes", WHEN, data)
    second = archiving.write_archive(folder, "dinkes", WHEN, data)

    assert first.name == "dinkes-20250301T080000Z.tar.gz"
    assert second.name == "dinkes-20250301T080000Z-1.tar.gz"
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert stat.S_IMODE(archiving.checksum_path(first).stat().st_mode) == 0o600
    assert not list(folder.glob(".*.part"))
    assert archiving.load_archive(first).files == FILES
    done = subprocess.run(["sha256sum", "-c", archiving.checksum_path(first).name], cwd=folder,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(_flip_middle_byte(path.read_bytes())), "checksum mismatch"),
    (lambda path: archiving.checksum_path(path).unlink(), "cannot read"),
    (lambda path: archiving.checksum_path(path).write_text("not a checksum\n"), "no sha256"),
])
def test_damaged_archive_or_checksum_is_refused_with_exit_2(tmp_path, damage, message):
    data = archiving.build_archive(manifest_of(snapshot(), tmp_path), FILES, VHOST)
    path = archiving.write_archive(tmp_path / "archives", "dinkes", WHEN, data)
    damage(path)

    with pytest.raises(UsageError) as raised:
        archiving.load_archive(path)
    assert message in str(raised.value) and raised.value.exit_code == 2


def test_archives_of_an_agency_newest_first_never_a_longer_slug(tmp_path):
    folder = tmp_path / "archives"
    folder.mkdir()
    for name in ("kec-20250101T000000Z.tar.gz", "kec-20250301T000000Z.tar.gz",
                 "kec-20250301T000000Z-1.tar.gz", "kec-kuaro-20250401T000000Z.tar.gz",
                 "kec-20250101T000000Z.tar.gz.sha256", ".kec-20250501T000000Z.tar.gz.part"):
        (folder / name).write_bytes(b"")

    found = [p.name for p in archiving.find_archives(folder, "kec")]

    assert found == ["kec-20250301T000000Z-1.tar.gz", "kec-20250301T000000Z.tar.gz",
                     "kec-20250101T000000Z.tar.gz"]
    assert archiving.find_archives(tmp_path / "missing", "kec") == []


def test_covering_archive_skips_a_damaged_one(tmp_path):
    snap = snapshot()
    data = archiving.build_archive(manifest_of(snap, tmp_path), FILES, VHOST)
    good = archiving.write_archive(tmp_path / "a", "dinkes", WHEN, data)
    bad = archiving.write_archive(tmp_path / "a", "dinkes", WHEN + dt.timedelta(hours=1), data)
    bad.write_bytes(b"garbage")

    assert archiving.covering_archive(tmp_path / "a", "dinkes", snap).path == good


# --------------------------------------------------------------------------- what an archive covers

def _without(files, rel):
    return {k: v for k, v in files.items() if k != rel}


@pytest.mark.parametrize("now, covered", [
    (snapshot(), True),                                    # killed right after archiving
    (snapshot(vhost=None), True),                          # killed after the vhost went
    (snapshot(files=_without(FILES, "index.html"), vhost=None), True),  # mid site removal
    (snapshot(files={}, vhost=None, exists=False), True),  # site gone: the archive holds it
    (snapshot(files={**FILES, "index.html": b"edited"}), False),
    (snapshot(files={**FILES, "baru.html": b"new page"}), False),
    (snapshot(modes={"index.html": 0o600}), False),
    (snapshot(vhost=b"server { }\n"), False),
])
def test_an_archive_covers_what_it_holds_and_nothing_else(tmp_path, now, covered):
    manifest = manifest_of(snapshot(), tmp_path)

    assert archiving.covers(manifest, now) is covered


def test_archive_without_vhost_does_not_cover_a_host_with_one(tmp_path):
    manifest = manifest_of(snapshot(vhost=None), tmp_path)

    assert archiving.covers(manifest, snapshot(vhost=None)) is True
    assert archiving.covers(manifest, snapshot()) is False


@pytest.mark.parametrize("host_files, modes, expected", [
    ({}, {}, {"index.html": "create", "layanan/izin.html": "create"}),
    ({"index.html": b"<h1>Dinkes</h1>\n"}, {}, {"index.html": "noop",
                                                "layanan/izin.html": "create"}),
    ({"index.html": b"<h1>Dinkes</h1>\n"}, {"index.html": 0o600},
     {"index.html": "update", "layanan/izin.html": "create"}),
    ({"index.html": b"something else"}, {}, {"index.html": "conflict",
                                             "layanan/izin.html": "create"}),
])
def test_restore_never_overwrites_other_content(tmp_path, host_files, modes, expected):
    archived = snapshot(files={k: FILES[k] for k in ("index.html", "layanan/izin.html")})
    manifest = manifest_of(archived, tmp_path)

    assert restore.restore_actions(manifest["files"], snapshot(files=host_files,
                                                                modes=modes)) == expected


# --------------------------------------------------------------------------- plan rows

@pytest.mark.parametrize("snap, shared, present, revoke, expected", [
    (snapshot(), False, True, True, {"vhost": "delete", "site": "delete", "cert": "delete"}),
    (snapshot(vhost=None, files={}, exists=False), False, False, True,
     {"vhost": "noop", "site": "noop", "cert": "noop"}),
    (snapshot(), True, True, True, {"vhost": "delete", "site": "delete", "cert": "noop"}),
    (snapshot(), False, True, False, {"vhost": "delete", "site": "delete", "cert": "delete"}),
])
def test_removal_rows(tmp_path, snap, shared, present, revoke, expected):
    inventory = _sample_inventory(tmp_path)
    agency = inventory.agencies["dinkes"]

    rows = offboard.removal_changes(agency, inventory.hosts["web1"], snap, None, present,
                                    shared, revoke)

    assert {r.kind: r.action for r in rows} == expected
    cert = next(r for r in rows if r.kind == "cert")
    if shared:
        assert "wildcard" in cert.reason
    elif present and not revoke:
        assert "not revoked" in cert.reason


def test_external_agency_has_nothing_to_remove_on_hosts(tmp_path):
    inventory = _sample_inventory(tmp_path)
    agency = dataclasses.replace(inventory.agencies["dinkes"], host=None,
                                 external_url="https://dinkes.example.id/")

    rows = [offboard.archive_change(agency, None, None, tmp_path)] + \
        offboard.removal_changes(agency, None, None, None, False, False, True)

    assert {r.action for r in rows} == {"noop"}


def test_archive_row_reuses_a_covering_archive_and_names_what_is_not_archived(tmp_path):
    inventory = _sample_inventory(tmp_path)
    agency = inventory.agencies["dinkes"]

    reused = offboard.archive_change(agency, snapshot(), tmp_path / "x.tar.gz", tmp_path)
    fresh = offboard.archive_change(agency, snapshot(), None, tmp_path)

    assert reused.action == "noop" and reused.name.endswith("x.tar.gz")
    assert fresh.action == "create" and "tautan" in fresh.reason and "vhost" in fresh.new


def test_registry_row(tmp_path):
    inventory = _sample_inventory(tmp_path)
    agency = inventory.agencies["dinkes"]

    assert registry_status.registry_change(agency, "offboarded").action == "update"
    assert registry_status.registry_change(agency, "active").action == "noop"
    gone = dataclasses.replace(agency, offboarded=True)
    assert registry_status.registry_change(gone, "offboarded").action == "noop"


# --------------------------------------------------------------------------- the host agent's side

def _site_tree(root: Path) -> Path:
    site_dir = root / "www" / "dinkes"
    (site_dir / "berkas").mkdir(parents=True)
    (site_dir / "index.html").write_bytes(b"<h1>Dinkes</h1>\n")
    (site_dir / "berkas" / "laporan.pdf").write_bytes(bytes(range(256)))
    os.chmod(site_dir / "berkas" / "laporan.pdf", 0o600)
    os.chmod(site_dir / "berkas", 0o750)
    (site_dir / "tautan").symlink_to("/etc/passwd")
    (root / "sites").mkdir()
    (root / "sites" / "dinkes.conf").write_bytes(VHOST)
    return site_dir


def test_agent_snapshot_then_restore_is_byte_for_byte(tmp_path):
    site_dir = _site_tree(tmp_path)
    web_root = str(tmp_path / "www")
    snap = agent.site_snapshot(str(site_dir), web_root, str(tmp_path / "sites/dinkes.conf"), True)
    assert snap["skipped"] == ["tautan"]
    assert snap["dirs"] == {"berkas": 0o750}
    assert snap["vhost"]["sha256"] == hashlib.sha256(VHOST).hexdigest()
    files = [{"path": rel, **f} for rel, f in snap["files"].items()]

    assert agent.remove_tree(str(site_dir), web_root) == {"removed": True, "entries": 4}
    assert agent.remove_tree(str(site_dir), web_root) == {"removed": False, "entries": 0}
    result = agent.restore_site(str(site_dir), web_root, files, snap["dirs"])

    assert result == {"written": 2, "unchanged": 0, "conflicts": []}
    again = agent.site_snapshot(str(site_dir), web_root, str(tmp_path / "nothing.conf"), False)
    assert {rel: (f["sha256"], f["mode"], f["mtime"]) for rel, f in again["files"].items()} == \
        {rel: (f["sha256"], f["mode"], f["mtime"]) for rel, f in snap["files"].items()}
    assert again["dirs"] == {"berkas": 0o750}
    assert agent.restore_site(str(site_dir), web_root, files, snap["dirs"])["unchanged"] == 2


def test_agent_restore_writes_nothing_when_a_file_differs(tmp_path):
    site_dir = _site_tree(tmp_path)
    web_root = str(tmp_path / "www")
    snap = agent.site_snapshot(str(site_dir), web_root, str(tmp_path / "x.conf"), True)
    files = [{"path": rel, **f} for rel, f in snap["files"].items()]
    (site_dir / "index.html").write_bytes(b"edited since")
    (site_dir / "berkas" / "laporan.pdf").unlink()

    result = agent.restore_site(str(site_dir), web_root, files, snap["dirs"])

    assert result["conflicts"] == ["index.html"] and result["written"] == 0
    assert not (site_dir / "berkas" / "laporan.pdf").exists()


@pytest.mark.parametrize("target", ["www", "elsewhere", "www/link"])
def test_agent_removes_only_folders_strictly_inside_the_root(tmp_path, target):
    (tmp_path / "www").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "www" / "link").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(ValueError):
        agent.remove_tree(str(tmp_path / target), str(tmp_path / "www"))
    assert (tmp_path / "www").is_dir() and (tmp_path / "elsewhere").is_dir()


def test_agent_refuses_restore_paths_that_leave_the_site(tmp_path):
    (tmp_path / "www" / "dinkes").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "www" / "dinkes" / "up").symlink_to(tmp_path / "outside")
    files = [{"path": "up/x.html", "data": "eA==", "mode": 0o644, "mtime": 0}]

    with pytest.raises(ValueError):
        agent.restore_site(str(tmp_path / "www" / "dinkes"), str(tmp_path / "www"), files, {})
    with pytest.raises(ValueError):
        agent.restore_site(str(tmp_path / "www" / "dinkes"), str(tmp_path / "www"),
                           [{**files[0], "path": "../x.html"}], {})
    assert list((tmp_path / "outside").iterdir()) == []


# --------------------------------------------------------------------------- helpers

def _sample_inventory(tmp_path: Path):
    root = tmp_path / "inventory"
    if not root.exists():
        (root / "agencies").mkdir(parents=True)
        for rel in ("hosts.yml", "group_vars/all.yml"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text((SAMPLE / rel).read_text())
        (root / "agencies/dinkes.yml").write_text((SAMPLE / "agencies/dinkes.yml").read_text())
    return load_inventory(root, tmp_path / "state")


def test_manifest_records_where_and_what(tmp_path):
    manifest = manifest_of(snapshot(), tmp_path)

    assert manifest["schema"] == archiving.ARCHIVE_SCHEMA
    assert (manifest["agency"], manifest["host"]) == ("dinkes", "web1")
    assert manifest["site_dir"].endswith("/www/dinkes")
    assert manifest["created_at"] == "2025-03-01T08:00:00+00:00"
    json.dumps(manifest)  # plain JSON, no objects
