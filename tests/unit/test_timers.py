"""The systemd units: contrib/systemd is their rendering with example paths, and
`provisioner timers install|remove|status` writes them into a folder (a tmp dir here;
systemd-analyze checks what was written)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioner.errors import UsageError
from provisioner.lifecycle import timers

from .conftest import SampleInventory

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def test_contrib_holds_the_units_rendered_with_the_example_paths() -> None:
    rendered = timers.render_units(timers.EXAMPLE)
    assert sorted(p.name for p in CONTRIB.iterdir()) == sorted(rendered)
    for name, text in rendered.items():
        assert (CONTRIB / name).read_text() == text, f"contrib/systemd/{name} is out of date"


def test_the_sweep_runs_hourly_with_alerts_and_the_report_weekly() -> None:
    units = timers.render_units(timers.EXAMPLE)
    sweep = units["provisioner-sweep.service"]
    assert "ExecStart=/opt/provisioner/.venv/bin/provisioner sweep --format html --output " \
           "/var/lib/provisioner/laporan.html\n" in sweep
    assert "--no-alerts" not in sweep and "SuccessExitStatus=1\n" in sweep
    assert "OnCalendar=hourly\n" in units["provisioner-sweep.timer"]
    assert "ExecStart=/opt/provisioner/.venv/bin/provisioner report --mail\n" in \
        units["provisioner-report.service"]
    assert "OnCalendar=Mon *-*-* 07:00:00\n" in units["provisioner-report.timer"]
    for name, text in units.items():
        if name.endswith(".service"):
            assert "Environment=PROVISIONER_INVENTORY=/etc/provisioner/inventory\n" in text
            assert "ReadWritePaths=/var/lib/provisioner\n" in text
            assert "User=provisioner\n" in text and "ProtectHome=yes\n" in text


def test_state_in_a_home_dir_is_kept_writable() -> None:
    values = timers.UnitValues("/root/p/.venv/bin/provisioner", Path("/root/p/inventory"),
                               Path("/root/p/state"), "root", "root")
    assert "ProtectHome=read-only\n" in timers.render_units(values)["provisioner-renew.service"]


@pytest.mark.parametrize("bad", ["/srv/my state", "/srv/100%", "/srv/$HOME", "/srv/a\nb",
                                 "/srv/a\n", "/srv/\"q\""])
def test_a_path_that_cannot_be_written_in_a_unit_is_refused(bad: str) -> None:
    values = timers.UnitValues("/usr/bin/provisioner", Path("/etc/inv"), Path(bad), "p", "p")
    with pytest.raises(UsageError, match="cannot be written in a systemd unit"):
        timers.render_units(values)


def with_report_to(sample: SampleInventory, tmp_path: Path) -> None:
    password = tmp_path / "smtp-password"
    password.write_text("x" * 20)
    password.chmod(0o600)
    settings = sample.read("group_vars/all.yml")
    settings["alerts"] = {"email": {"host": "127.0.0.1", "username": "u@paserkab.go.id",
                                    "password_file": str(password), "from": "u@paserkab.go.id",
                                    "to": ["ops@paserkab.go.id"],
                                    "report_to": ["kadis@paserkab.go.id"]}}
    sample.write("group_vars/all.yml", settings)


def test_install_status_remove(sample: SampleInventory, tmp_path: Path) -> None:
    systemd_dir = tmp_path / "systemd"
    systemd_dir.mkdir()
    option = ("--systemd-dir", str(systemd_dir))

    dry = sample.cli("timers", "install", "--dry-run", *option)
    assert dry.exit_code == 0 and list(systemd_dir.iterdir()) == []
    assert f"# {systemd_dir}/provisioner-sweep.service\n" in dry.stdout
    assert f"Environment=PROVISIONER_INVENTORY={sample.root.resolve()}\n" in dry.stdout

    without_report = sample.cli("timers", "install", *option)
    assert without_report.exit_code == 0, without_report.stderr
    assert "left out the weekly report (provisioner-report.*): no alerts.email.report_to" \
        in without_report.stdout
    assert sorted(p.name for p in systemd_dir.iterdir()) == sorted(
        name for name in timers.UNITS if not name.startswith("provisioner-report."))

    with_report_to(sample, tmp_path)
    installed = sample.cli("timers", "install", *option)
    assert installed.exit_code == 0, installed.stderr
    assert sorted(p.name for p in systemd_dir.iterdir()) == sorted(timers.UNITS)
    assert "left out" not in installed.stdout
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in systemd_dir.iterdir())
    assert ("systemd is not running on this machine: nothing was enabled" if not
            timers.systemd_running() else "systemctl acts only on /etc/systemd/system") \
        in installed.stdout
    assert "systemctl daemon-reload && systemctl enable --now provisioner-sweep.timer " \
           "provisioner-report.timer provisioner-renew.timer" in installed.stdout
    sweep = (systemd_dir / "provisioner-sweep.service").read_text()
    state = sample.state_dir.resolve()
    assert f"Environment=PROVISIONER_STATE_DIR={state}\n" in sweep
    assert f"--output {state}/laporan.html\n" in sweep
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no",
                               *map(str, sorted(systemd_dir.iterdir()))],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr

    again = sample.cli("timers", "install", *option)
    assert again.exit_code == 0 and "unit files already up to date" in again.stdout
    assert sample.cli("timers", "status", *option).exit_code == 0

    (systemd_dir / "provisioner-sweep.timer").write_text(
        (systemd_dir / "provisioner-sweep.timer").read_text().replace("hourly", "daily"))
    changed = sample.cli("timers", "status", "--format", "json", *option)
    assert changed.exit_code == 1 and '"file": "differs"' in changed.stdout

    foreign = systemd_dir / "provisioner-report.timer"
    foreign.write_text("[Timer]\nOnCalendar=daily\n")
    refused = sample.cli("timers", "install", *option)
    assert refused.exit_code == 1 and "not written by provisioner, left alone" in refused.stderr
    assert foreign.read_text() == "[Timer]\nOnCalendar=daily\n"

    removed = sample.cli("timers", "remove", *option)
    assert removed.exit_code == 0, removed.stderr
    assert [p.name for p in systemd_dir.iterdir()] == ["provisioner-report.timer"]  # not ours


def test_install_into_a_missing_folder_is_a_usage_error(sample: SampleInventory,
                                                        tmp_path: Path) -> None:
    result = sample.cli("timers", "install", "--systemd-dir", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "no folder" in result.stderr
