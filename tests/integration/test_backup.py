"""Backups with restic on a real lab: back up, lose a site, restore it byte for byte.

The module brings up its own lab (offset 220 inside PROVISIONER_TEST_NET) and a real
restic repository in its state dir. Tests run in file order and build on the backups
the earlier ones made.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from provisioner.site import render as site
from tests.leakcheck import find_leaks

from .conftest import TEST_NET, start_test_lab
from .faultkit import FaultLab, file_states
from .test_offboard import https_get

WEB1, WEB3 = "dinkes", "kec-batu-engau"  # web1 (root), web3 (a sudo user, production-shaped)
OTHER = "setda"
UPLOAD_BYTES = 102_400


@pytest.fixture(scope="module")
def blab(tmp_path_factory: pytest.TempPathFactory):
    test_lab = start_test_lab(tmp_path_factory.mktemp("backup"), TEST_NET, offset=220)
    try:
        fault_lab = FaultLab(test_lab)
        code, out = fault_lab.json("onboard", WEB1, WEB3, OTHER, "--yes")
        assert code == 0, out["outcomes"]
        yield fault_lab
    finally:
        test_lab.lab.down()


def site_dir_of(blab: FaultLab, slug: str) -> Path:
    inventory = blab.inventory
    agency = inventory.agencies[slug]
    host = inventory.hosts[agency.host]
    return blab.lab.lab.local(host, site.site_dir(agency, host))


def add_agency_files(site_dir: Path) -> None:
    """What an agency uploads: a private file in a folder of its own (modes kept, masked)."""
    report = site_dir / "berkas" / "laporan-2024.pdf"
    report.parent.mkdir(mode=0o750, exist_ok=True)
    report.write_bytes(bytes(range(256)) * (UPLOAD_BYTES // 256))
    report.chmod(0o600)


def outcomes(out: dict) -> dict[str, dict]:
    return {o["target"]: o for o in out["outcomes"]}


@pytest.mark.parametrize("slug", [WEB1, WEB3])
def test_backup_then_lose_the_site_then_restore_from_backup(blab: FaultLab, slug: str):
    site_dir = site_dir_of(blab, slug)
    add_agency_files(site_dir)
    before = file_states(site_dir)

    code, out = blab.json("backup", "--all")

    assert code == 0, out
    done = outcomes(out)
    assert done[slug]["status"] == "changed" and done["state"]["status"] == "changed"
    assert done[slug]["summary"]["snapshot_id"]
    assert out["retention"] is not None
    repository = blab.inventory.settings.backup.repository
    assert (repository / "config").is_file()
    shutil.rmtree(site_dir)  # the disk died

    code, out = blab.json("restore", slug, "--from-backup", "latest", "--yes")

    assert code == 0, out["result"]
    steps = {o["kind"]: o["status"] for o in out["result"]["outcomes"]}
    assert steps["site"] == "changed" and steps["verify"] == "ok"
    assert file_states(site_dir) == before  # every file's bytes and (masked) mode
    assert (site_dir / "berkas").stat().st_mode & 0o777 == 0o750
    assert https_get(blab, slug)[0] == 200


def test_a_changed_file_makes_a_new_snapshot_that_shares_data(blab: FaultLab):
    page = site_dir_of(blab, WEB1) / "index.html"
    page.write_text(page.read_text(encoding="utf-8").replace(
        "</main>", "<p>Berita: jadwal vaksinasi pekan ini</p></main>"), encoding="utf-8")
    before = {s["id"] for s in blab.json("backup", "list", WEB1)[1]}

    code, out = blab.json("backup", "--all")

    assert code == 0, out
    done = outcomes(out)
    summary = done[WEB1]["summary"]
    assert done[WEB1]["status"] == "changed" and summary["snapshot_id"] not in before
    assert summary["files_changed"] == 2 and summary["files_new"] == 0  # the page, manifest.json
    assert summary["files_unmodified"] >= 3
    # the 100 kB upload is not stored again (what is added: the page, the manifest, trees)
    assert summary["data_added"] < UPLOAD_BYTES / 4
    for slug in (WEB3, OTHER):  # nothing changed there: no new snapshot
        assert done[slug]["status"] == "ok" and "unchanged since snapshot" in done[slug]["detail"]
    # retention (daily: 7) keeps one snapshot a day per agency: this morning's earlier one goes
    assert out["retention"]["removed"] >= 2  # dinkes' and the state's earlier ones
    listed = blab.json("backup", "list", WEB1)[1]
    assert [s["id"][:8] for s in listed] == [summary["snapshot_id"][:8]]


def test_list_shows_each_agencys_snapshots_and_check_passes(blab: FaultLab):
    code, listed = blab.json("backup", "list", WEB1)
    assert code == 0 and len(listed) == 1
    assert listed[0]["tags"] == [f"agency:{WEB1}"]
    assert listed[0]["host"] == blab.inventory.settings.inventory_id
    code, everything = blab.json("backup", "list")
    assert sorted(t for s in everything for t in s["tags"]) == \
        sorted(["state", f"agency:{WEB1}", f"agency:{WEB3}", f"agency:{OTHER}"])

    result = blab.cli("backup", "check")

    assert result.exit_code == 0, result.stderr
    assert "no errors were found" in result.stdout
    code, out = blab.json("backup", "prune")
    assert code == 0 and out == {"kept": 4, "removed": 0, "dry_run": False}


def test_restore_from_a_named_snapshot_and_refusals(blab: FaultLab):
    latest = blab.json("backup", "list", WEB1)[1][-1]
    result = blab.cli("restore", WEB1, "--from-backup", "0000ffff", "--yes")
    assert result.exit_code == 2 and "no snapshot of dinkes matches" in result.stderr
    before = file_states(site_dir_of(blab, WEB1))

    code, out = blab.json("restore", WEB1, "--from-backup", latest["short_id"], "--yes")

    assert code == 0, out["result"]
    assert out["result"]["outcomes"][0]["status"] == "ok"  # identical: nothing written
    assert file_states(site_dir_of(blab, WEB1)) == before


def test_a_repository_the_password_does_not_open_is_refused(blab: FaultLab, tmp_path: Path):
    settings_file = blab.lab.inventory_dir / "group_vars" / "all.yml"
    original = settings_file.read_text(encoding="utf-8")
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    data = yaml.safe_load(original)
    data["backup"]["password_file"] = str(wrong)
    settings_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    try:
        result = blab.cli("backup", "list")
    finally:
        settings_file.write_text(original, encoding="utf-8")
    assert result.exit_code == 1
    assert "password" in result.stderr and "Traceback" not in result.stderr


def test_the_password_never_appears_in_output_or_state(blab: FaultLab):
    password_file = blab.inventory.settings.backup.password_file
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 32
    blab.outputs.append(blab.cli("backup", "list").stdout)
    assert not any(password in text for text in blab.outputs)
    state = blab.lab.state_dir
    assert not (state / "backup" / "staging" / "state").exists()  # no copy of the account key
    logs = [p for p in (state / "audit.jsonl", state / "backup" / "staging") if p.exists()]
    assert find_leaks(logs, [password]) == []
