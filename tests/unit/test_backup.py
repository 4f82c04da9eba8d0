"""Backups: the backup: settings, restic's argument lists and answers, the staging (pure)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from provisioner.errors import UsageError
from provisioner.lifecycle import archive as archiving
from provisioner.lifecycle import backup, restic, timers
from provisioner.registry.load import load_inventory
from provisioner.registry.models import BackupSettings

from .conftest import SAMPLE, SampleInventory

PASSWORD = "correct-horse-battery-staple-0123456789"


def with_backup(sample: SampleInventory, block: object) -> None:
    settings = sample.read("group_vars/all.yml")
    settings["backup"] = block
    sample.write("group_vars/all.yml", settings)


def secret(path: Path, mode: int = 0o600) -> str:
    path.write_text(PASSWORD + "\n")
    path.chmod(mode)
    return str(path)


def block(tmp: Path, **overrides: object) -> dict:
    return {"repository": str(tmp / "repo"), "password_file": secret(tmp / "restic-password"),
            "retention": {"daily": 7, "weekly": 4, "monthly": 6}, **overrides}


# =========================================================================== settings


def test_the_sample_names_a_repository_in_the_state_dir_and_a_lab_password_file() -> None:
    inventory = load_inventory(SAMPLE)
    settings = inventory.settings.backup
    assert settings.repository == inventory.state_dir / "backup" / "repo"
    assert settings.password_file == inventory.state_dir / "lab" / "keys" / "backup-password"
    assert dict(settings.retention) == {"daily": 7, "weekly": 4, "monthly": 6}


def test_a_valid_block_keeps_the_periods_in_restic_order(sample: SampleInventory,
                                                         tmp_path: Path) -> None:
    with_backup(sample, block(tmp_path, retention={"monthly": 6, "daily": 7}))
    settings = load_inventory(sample.root, sample.state_dir).settings.backup
    assert settings == BackupSettings(tmp_path / "repo", tmp_path / "restic-password",
                                      {"daily": 7, "monthly": 6})
    assert list(settings.retention) == ["daily", "monthly"]


BAD = [
    ("not a mapping", lambda t: ["repo"], "backup", "must be a mapping"),
    ("unknown key", lambda t: block(t, keep={"daily": 1}), "backup.keep", "unknown key"),
    ("relative repository", lambda t: block(t, repository="backup/repo"), "backup.repository",
     "not a safe absolute path"),
    ("password file missing", lambda t: block(t, password_file=str(t / "none")),
     "backup.password_file", "file not found"),
    ("password file readable", lambda t: block(t, password_file=secret(t / "open", 0o644)),
     "backup.password_file", "readable by group or others (mode 0644)"),
    ("no password file", lambda t: {k: v for k, v in block(t).items() if k != "password_file"},
     "backup.password_file", "missing"),
    ("period typo", lambda t: block(t, retention={"dayly": 7}), "backup.retention.dayly",
     "unknown key"),
    ("count", lambda t: block(t, retention={"daily": 0}), "backup.retention.daily",
     "from 1 to 1000"),
    ("count type", lambda t: block(t, retention={"daily": True}), "backup.retention.daily",
     "from 1 to 1000"),
    ("keeps nothing", lambda t: block(t, retention={}), "backup.retention", "keeps nothing"),
]


@pytest.mark.parametrize("make,field,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_backup_setting_is_one_line_naming_file_and_field(
        sample: SampleInventory, tmp_path: Path, make, field: str, words: str) -> None:
    with_backup(sample, make(tmp_path))
    sample.assert_one_settings_error(field, words, PASSWORD)


def test_without_a_backup_block_the_commands_say_where_to_add_it(sample: SampleInventory) -> None:
    settings = sample.read("group_vars/all.yml")
    del settings["backup"]
    sample.write("group_vars/all.yml", settings)
    for args in (["backup", "--all"], ["backup", "list"], ["backup", "check"]):
        result = sample.cli(*args)
        assert result.exit_code == 2, args
        assert re.match(r"error: \S*group_vars/all\.yml: backup: not set \(hint: add backup:",
                        result.stderr), result.stderr


def test_backup_without_a_target_is_refused(sample: SampleInventory) -> None:
    result = sample.cli("backup")
    assert result.exit_code == 2 and "name what to back up" in result.stderr


# =========================================================================== restic (pure)


def test_backup_arguments_never_hold_the_password() -> None:
    args = restic.backup_args([Path("/s/sites/dinkes")], "paserkab-dkisp", ["agency:dinkes"])
    assert args == ["backup", "--json", "--host", "paserkab-dkisp", "--tag", "agency:dinkes",
                    "--", "/s/sites/dinkes"]
    assert "--dry-run" in restic.backup_args([Path("/x")], "h", [], dry_run=True)


def test_forget_applies_the_retention_to_this_inventory_per_agency() -> None:
    assert restic.forget_args({"daily": 7, "weekly": 4, "monthly": 6}, "paserkab-dkisp") == [
        "forget", "--json", "--prune", "--host", "paserkab-dkisp", "--group-by", "host,tags",
        "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "6"]


def test_the_client_passes_the_password_by_file_and_drops_the_callers_restic_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTIC_PASSWORD", "from-the-caller")
    monkeypatch.setenv("RESTIC_REPOSITORY", "/elsewhere")
    settings = BackupSettings(tmp_path / "repo", tmp_path / "pw", {"daily": 7})
    env = restic.Restic(settings, tmp_path / "cache")._env()
    assert env["RESTIC_REPOSITORY"] == str(tmp_path / "repo")
    assert env["RESTIC_PASSWORD_FILE"] == str(tmp_path / "pw")
    assert "RESTIC_PASSWORD" not in env


BACKUP_OUTPUT = "\n".join([
    '{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":3}',
    '{"message_type":"summary","files_new":1,"files_changed":2,"files_unmodified":3,'
    '"dirs_new":5,"data_added":2100,"total_files_processed":6,"total_bytes_processed":300,'
    '"total_duration":0.25,"snapshot_id":"5fdb6aa2"}', ""])


def test_the_backup_summary_is_parsed() -> None:
    assert restic.parse_backup_summary(BACKUP_OUTPUT) == restic.BackupSummary(
        "5fdb6aa2", 1, 2, 3, 300, 2100, 0.25)
    with pytest.raises(ValueError):
        restic.parse_backup_summary('{"message_type":"status"}\nnot json\n')


def test_snapshots_and_forget_answers_are_parsed() -> None:
    snap = {"time": "2026-11-30T07:10:33Z", "paths": ["/s/sites/dinkes"], "hostname": "h",
            "tags": ["agency:dinkes"], "id": "5fdb6aa2" + "0" * 56, "short_id": "5fdb6aa2"}
    [parsed] = restic.parse_snapshots(json.dumps([snap]))
    assert parsed == restic.Snapshot(snap["id"], "5fdb6aa2", snap["time"], "h",
                                     ("agency:dinkes",), ("/s/sites/dinkes",))
    assert restic.parse_snapshots("null") == []
    forget = json.dumps([{"keep": [snap], "remove": [snap, snap]}, {"keep": [snap]}])
    assert restic.parse_forget(forget + "\nloading indexes...\ndone\n") == (2, 2)


def test_an_error_message_is_the_bounded_printable_tail_of_stderr() -> None:
    stderr = "\n".join([f"line {i}" for i in range(10)] + ["Fatal: wrong password\x1b[2J" + "x" * 900])
    tail = restic.error_tail(stderr)
    assert tail.startswith("line 8 / line 9 / Fatal: wrong password?[2J")
    assert len(tail) < 400 and "\x1b" not in tail
    assert "password file" in restic._hint(stderr)


def test_a_snapshot_is_found_by_latest_or_an_unambiguous_prefix() -> None:
    def snap(sid: str, time: str) -> restic.Snapshot:
        return restic.Snapshot(sid + "0" * 56, sid, time, "h", ("agency:dinkes",), ("/p",))

    snaps = [snap("aaaa1111", "2026-11-29T01:00:00Z"), snap("aaaa2222", "2026-11-30T01:00:00Z")]
    assert backup.find_snapshot(snaps, "dinkes", "latest").short_id == "aaaa2222"
    assert backup.find_snapshot(snaps, "dinkes", "aaaa1").short_id == "aaaa1111"
    for which in ("aaaa", "ffff0000", "aa"):
        with pytest.raises(UsageError):
            backup.find_snapshot(snaps, "dinkes", which)
    with pytest.raises(UsageError, match="no backup of dinkes"):
        backup.find_snapshot([], "dinkes", "latest")


# =========================================================================== staging


def manifest(files: dict[str, bytes], mtime: float = 1_700_000_000.0) -> dict:
    import hashlib

    return {"schema": archiving.ARCHIVE_SCHEMA, "agency": "dinkes", "created_at": "now",
            "operator": "op", "command": None, "host": "web1",
            "files": {rel: {"sha256": hashlib.sha256(data).hexdigest(), "mode": 0o644,
                            "size": len(data), "mtime": mtime} for rel, data in files.items()},
            "dirs": {}, "skipped": [], "vhost": None}


def test_staging_lays_out_an_archive_that_reads_back_and_drops_removed_files(
        tmp_path: Path) -> None:
    folder = tmp_path / "sites" / "dinkes"
    files = {"index.html": b"<p>halo</p>", "berkas/a.pdf": b"%PDF"}
    backup.stage_site(folder, manifest(files), files, None)
    first_inode = (folder / "site" / "berkas" / "a.pdf").stat().st_ino
    assert (folder / "site" / "index.html").stat().st_mtime == 1_700_000_000.0

    files = {"index.html": b"<p>halo lagi</p>", "berkas/a.pdf": b"%PDF"}
    backup.stage_site(folder, manifest(files), files, None)

    assert (folder / "site" / "berkas" / "a.pdf").stat().st_ino == first_inode  # untouched
    archived = backup.load_staged(folder, Path("test"))
    assert archived.files == files
    backup.stage_site(folder, manifest({"index.html": b"x"}), {"index.html": b"x"}, None)
    assert not (folder / "site" / "berkas").exists()


def test_a_path_leaving_the_staging_folder_is_refused(tmp_path: Path) -> None:
    from provisioner.errors import ProvisionerError

    files = {"../../escape": b"x"}
    with pytest.raises(ProvisionerError, match="unsafe path"):
        backup.stage_site(tmp_path / "s", manifest(files), files, None)
    assert not (tmp_path / "escape").exists()


def test_only_the_time_and_operator_of_a_manifest_may_differ_for_no_new_snapshot() -> None:
    old = manifest({"a": b"1"})
    assert backup.same_content(old, {**old, "created_at": "later", "operator": "other"})
    assert not backup.same_content(old, manifest({"a": b"2"}))
    assert not backup.same_content(None, old)


def test_the_daily_backup_timer_is_installed_only_with_a_backup_block() -> None:
    units = timers.render_units(timers.EXAMPLE)
    assert "ExecStart=/opt/provisioner/.venv/bin/provisioner backup --all\n" in \
        units["provisioner-backup.service"]
    assert "OnCalendar=*-*-* 01:43:00" in units["provisioner-backup.timer"]
    assert not any("backup" in name for name in timers.render_units(timers.EXAMPLE,
                                                                    backup=False))
