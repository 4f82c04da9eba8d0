"""The audit log: one JSON line per change, 0600, concurrent writers, secrets never written."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import pwd
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from provisioner.errors import ProvisionerError
from provisioner.safety.audit import AuditEntry, AuditLog, current_operator
from provisioner.safety.secrets import REDACTED, Redactor, read_secret_file
from tests.unit.conftest import run_cli

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
SECRET = base64.b64encode(b"lab-tsig-secret-material-0123456").decode()


def entry(agency: str | None = "dinkes", minutes: int = 0, **fields) -> AuditEntry:
    values = dict(command="provisioner onboard dinkes", agency=agency, kind="dns",
                  action="create", change={"name": f"{agency}.paserkab.go.id", "new": "A 1.2.3.4"},
                  result="changed", time=T0 + timedelta(minutes=minutes), operator="ayu")
    return AuditEntry(**{**values, **fields})


@pytest.mark.parametrize("environ, expected", [
    ({"PROVISIONER_OPERATOR": "ayu", "SUDO_USER": "budi", "USER": "root"}, "ayu"),
    ({"PROVISIONER_OPERATOR": "  ", "SUDO_USER": "budi", "USER": "root"}, "budi"),
    ({"USER": "citra", "LOGNAME": "dewi"}, "citra"),
    ({"LOGNAME": "dewi"}, "dewi"),
    ({}, pwd.getpwuid(os.getuid()).pw_name),
], ids=["explicit", "blank explicit -> sudo caller", "login", "logname", "uid's name"])
def test_current_operator(environ, expected):
    assert current_operator(environ) == expected


def test_entry_defaults_are_now_in_utc_and_the_operator(monkeypatch):
    monkeypatch.setenv("PROVISIONER_OPERATOR", "eko")
    made = AuditEntry("provisioner offboard dlh", "dlh", "site", "delete", "archived", "changed")
    assert made.operator == "eko"
    assert made.time.tzinfo is not None
    assert abs(datetime.now(timezone.utc) - made.time) < timedelta(minutes=1)
    assert made.to_dict()["time"].endswith("+00:00")


@pytest.mark.parametrize("fields, message", [
    ({"result": "done"}, "result must be one of"),
    ({"time": datetime(2025, 3, 1)}, "timezone-aware"),
])
def test_invalid_entries_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        entry(**fields)


def test_records_round_trip_as_one_json_line_each_in_a_0600_file(tmp_path):
    log = AuditLog(tmp_path / "state")
    first = entry()
    second = entry("dlh", 1, kind="vhost", action="update", change="dlh.conf", result="failed",
                   reason="nginx -t: unknown directive")
    assert log.record(first) == [first]
    log.record(second)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert log.path == tmp_path / "state" / "audit.jsonl"
    lines = log.path.read_text().splitlines()
    assert [json.loads(line)["agency"] for line in lines] == ["dinkes", "dlh"]
    assert json.loads(lines[0])["time"] == "2025-03-01T08:00:00.000+00:00"
    assert log.read() == [first, second]


def test_read_filters_by_agency_and_time(tmp_path):
    log = AuditLog(tmp_path)
    log.record(entry("dinkes", 0), entry("dlh", 10), entry("dinkes", 20), entry(None, 30))
    assert [e.time.minute for e in log.read(agency="dinkes")] == [0, 20]
    assert [e.agency for e in log.read(since=T0 + timedelta(minutes=10))] == \
        ["dlh", "dinkes", None]
    assert log.read(since=T0 + timedelta(minutes=5), agency="dinkes") == [entry("dinkes", 20)]
    assert AuditLog(tmp_path / "never-written").read() == []


def test_a_corrupt_line_is_reported_with_its_number(tmp_path):
    log = AuditLog(tmp_path)
    log.record(entry())
    with log.path.open("a") as handle:
        handle.write('{"half a record\n')
    with pytest.raises(ProvisionerError, match=r"audit\.jsonl:2: not an audit record"):
        log.read()


def test_a_tsig_secret_passed_by_mistake_never_lands_in_the_file(tmp_path):
    key_file = tmp_path / "tsig.key"
    key_file.write_text(f'key "paserkab" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n')
    key_file.chmod(0o600)
    read_secret_file(key_file, "tsig_key_file")  # the process now knows the secret
    log = AuditLog(tmp_path / "state")
    written = log.record(entry(change={"key": SECRET, "note": f"used {SECRET.rstrip('=')}"},
                               result="failed", reason=key_file.read_text()))
    raw = log.path.read_bytes()
    assert SECRET.rstrip("=").encode() not in raw
    assert written[0].redacted and log.read()[0].redacted
    assert log.read()[0].change == {"key": REDACTED, "note": f"used {REDACTED}"}
    assert log.read()[0].reason == key_file.read_text().replace(SECRET, REDACTED)


def test_private_keys_and_secret_fields_are_scrubbed_with_any_redactor(tmp_path):
    log = AuditLog(tmp_path, redactor=Redactor())
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n"
    log.record(entry(kind="cert", change={"cert": "CN=dinkes", "key": pem, "password": "x"}))
    stored = log.read()[0]
    assert stored.change == {"cert": "CN=dinkes",
                             "key": f"-----{REDACTED} PRIVATE KEY-----\n",
                             "password": REDACTED}
    assert b"MHcCAQEEIB" not in log.path.read_bytes()


def test_a_clean_entry_is_written_unchanged(tmp_path):
    log = AuditLog(tmp_path, redactor=Redactor([SECRET]))
    assert log.record(entry())[0].redacted is False


def _append_many(state_dir: str, writer: int, count: int) -> None:
    log = AuditLog(Path(state_dir))
    for i in range(count):
        log.record(entry(f"agency{writer}", change={"seq": i, "pad": "x" * 20000}))


def test_concurrent_writers_never_interleave(tmp_path):
    writers, count = 6, 60
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_many, args=(str(tmp_path), w, count))
                 for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    entries = AuditLog(tmp_path).read()  # raises on any torn or merged line
    assert len(entries) == writers * count
    for w in range(writers):
        assert [e.change["seq"] for e in entries if e.agency == f"agency{w}"] == list(range(count))


# --------------------------------------------------------------------------- history --audit

def test_history_audit_json_filters_and_limits(tmp_path):
    AuditLog(tmp_path).record(entry("dinkes", 0), entry("dlh", 1), entry("dinkes", 2),
                              entry("dinkes", 3, result="failed", reason="timeout"))
    result = run_cli("--state-dir", str(tmp_path), "history", "--audit", "--agency", "dinkes",
                     "--limit", "2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["agency"], r["time"][11:16], r["result"]) for r in rows] == \
        [("dinkes", "08:02", "changed"), ("dinkes", "08:03", "failed")]
    assert rows[1]["reason"] == "timeout" and rows[1]["operator"] == "ayu"


def test_history_audit_table(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    AuditLog(tmp_path).record(entry("dlh", result="failed", reason="nginx -t failed"))
    result = run_cli("--state-dir", str(tmp_path), "history", "--audit")
    assert result.exit_code == 0, result.stderr
    for text in ("audit log", "ayu", "dlh", "failed: nginx -t failed", "2025-03-01T08:00:00"):
        assert text in result.stdout
    empty = run_cli("--state-dir", str(tmp_path / "new"), "history", "--audit")
    assert empty.exit_code == 0 and "no changes recorded yet" in empty.stdout
