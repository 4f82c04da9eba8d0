"""The systemd timers: an hourly sweep with alerts, the weekly leadership report, the daily
certificate renewal, the daily backup.

The unit files are templates (``provisioner/data/systemd``) filled in with the
inventory, the state dir, the user owning the state dir and the ``provisioner``
command (pure: ``render_units``); ``contrib/systemd`` holds the same units rendered
with example paths. Installing writes the files, then reloads systemd and enables the
timers only where systemd is running and reads the folder written to.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ..errors import ProvisionerError, UsageError
from ..hosts import hostlib
from ..paths import DATA_DIR

TEMPLATE_DIR = DATA_DIR / "systemd"
SYSTEM_DIR = Path("/etc/systemd/system")
TIMERS = ("provisioner-sweep.timer", "provisioner-report.timer", "provisioner-renew.timer",
          "provisioner-backup.timer")
REPORT_UNIT = "provisioner-report."
BACKUP_UNIT = "provisioner-backup."
UNITS = tuple(name for timer in TIMERS
              for name in (timer.replace(".timer", ".service"), timer))
MARKER = "provisioner timers install"
INSTALLED_BY = (f"Installed and removed by `{MARKER}|remove` (which fill in the\n"
                "# paths and the user); contrib/systemd holds the same units with example paths.")
SERVICE_COMMON = """\
# The user that owns the state dir (keys, history, certificate records).
User=$user
Group=$group
Environment=PROVISIONER_INVENTORY=$inventory
Environment=PROVISIONER_STATE_DIR=$state_dir
Environment=HOME=$state_dir
WorkingDirectory=$state_dir
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectSystem=strict
ProtectHome=$protect_home
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ReadWritePaths=$state_dir"""
# What a unit file line may hold unquoted: no spaces, quotes, '%' (a systemd specifier),
# '$' or '\' (expansion), no control characters.
SAFE_VALUE = re.compile(r"[A-Za-z0-9_./+@:,=-]+")
HOME_DIRS = ("/home", "/root", "/run/user")


@dataclass(frozen=True)
class UnitValues:
    executable: str  # the provisioner command, absolute
    inventory: Path
    state_dir: Path
    user: str
    group: str


EXAMPLE = UnitValues("/opt/provisioner/.venv/bin/provisioner", Path("/etc/provisioner/inventory"),
                     Path("/var/lib/provisioner"), "provisioner", "provisioner")
"""The values contrib/systemd is rendered with."""


def render_units(values: UnitValues, *, report: bool = True,
                 backup: bool = True) -> dict[str, str]:
    """Every unit file's name and text (pure); without the weekly report's units when
    ``report`` is false (nobody to mail it to), without the backup's when ``backup`` is
    false (no backup: block in group_vars)."""
    for name, value in (("executable", values.executable), ("inventory", values.inventory),
                        ("state dir", values.state_dir), ("user", values.user),
                        ("group", values.group)):
        if not SAFE_VALUE.fullmatch(str(value)):
            raise UsageError(f"the {name} {str(value)!r} cannot be written in a systemd unit",
                             hint="use a path without spaces, quotes, '%', '$' or '\\'")
    in_home = any(Path(p).is_relative_to(home) for p in
                  (values.executable, values.inventory, values.state_dir) for home in HOME_DIRS)
    fields = {"executable": values.executable, "inventory": str(values.inventory),
              "state_dir": str(values.state_dir), "user": values.user, "group": values.group,
              "protect_home": "read-only" if in_home else "yes", "installed_by": INSTALLED_BY}
    fields["service_common"] = Template(SERVICE_COMMON).substitute(fields)
    return {name: Template((TEMPLATE_DIR / name).read_text(encoding="utf-8")).substitute(fields)
            for name in UNITS if (report or not name.startswith(REPORT_UNIT))
            and (backup or not name.startswith(BACKUP_UNIT))}


def timers_of(units: dict[str, str]) -> tuple[str, ...]:
    return tuple(name for name in units if name.endswith(".timer"))


def this_installation(inventory: Path, state_dir: Path) -> UnitValues:
    """The values for this machine: this provisioner command, the state dir's owner."""
    command = Path(sys.executable).with_name("provisioner")
    if not command.is_file():
        raise ProvisionerError(f"no provisioner command beside {sys.executable}",
                               hint="install the package (pip install -e .) in that venv")
    uid, gid = (state_dir.stat().st_uid, state_dir.stat().st_gid) if state_dir.exists() \
        else (os.geteuid(), os.getegid())
    return UnitValues(str(command), inventory.resolve(), state_dir.resolve(),
                      _name(pwd.getpwuid, uid), _name(grp.getgrgid, gid))


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


# =========================================================================== systemd

def systemd_running() -> bool:
    """Whether this machine was booted with systemd (what sd_booted() checks)."""
    return Path("/run/systemd/system").is_dir()


def manages(systemd_dir: Path) -> bool:
    """Whether systemctl should act on units written to this folder."""
    return systemd_running() and systemd_dir.resolve() == SYSTEM_DIR


def _systemctl(*args: str) -> str:
    try:
        done = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionerError(f"systemctl {' '.join(args)}: {exc}") from None
    if done.returncode not in (0, 1, 3):  # is-enabled/is-active answer "no" with 1 or 3
        raise ProvisionerError(f"systemctl {' '.join(args)}: "
                               f"{(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout.strip()


@dataclass(frozen=True)
class UnitState:
    name: str
    path: Path
    file: str  # installed (as rendered now), differs, missing, foreign (not ours)
    enabled: str | None = None  # systemctl is-enabled, timers only, when systemd manages
    active: str | None = None


@dataclass(frozen=True)
class TimersResult:
    units: tuple[UnitState, ...]
    systemctl: tuple[str, ...]  # the systemctl commands run (or to run by hand)
    ran_systemctl: bool
    changed: tuple[str, ...] = ()  # unit files written (install) or deleted (remove)


def _file_state(path: Path, text: str) -> str:
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "missing"
    except (OSError, UnicodeDecodeError):
        return "foreign"
    if current == text:
        return "installed"
    return "differs" if MARKER in current else "foreign"


def _write(path: Path, text: str) -> None:
    try:
        hostlib.write_atomic(path, text.encode("utf-8"), 0o644, create=False)
    except OSError as exc:
        raise ProvisionerError(f"cannot write {path}: {exc.strerror or exc}",
                               hint="run as root, or pass --systemd-dir") from None


def install(units: dict[str, str], systemd_dir: Path) -> TimersResult:
    """Write the units (a unit file someone else wrote is refused, left as it is)."""
    paths = {name: systemd_dir / name for name in units}
    foreign = [str(p) for name, p in paths.items() if _file_state(p, units[name]) == "foreign"]
    if foreign:
        raise ProvisionerError(f"not written by provisioner, left alone: {', '.join(foreign)}",
                               hint="move them aside, then install again")
    if not systemd_dir.is_dir():
        raise UsageError(f"no folder {systemd_dir}", hint="pass an existing --systemd-dir")
    written = tuple(name for name, text in units.items()
                    if _file_state(paths[name], text) != "installed")
    for name in written:
        _write(paths[name], units[name])
    commands = (("daemon-reload",), ("enable", "--now", *timers_of(units)))
    ran = manages(systemd_dir)
    if ran:
        for command in commands:
            _systemctl(*command)
    return TimersResult(status(units, systemd_dir).units,
                        tuple(" ".join(("systemctl", *c)) for c in commands), ran, written)


def remove(units: dict[str, str], systemd_dir: Path) -> TimersResult:
    """Stop and disable the timers, then delete the unit files this command wrote."""
    commands = (("disable", "--now", *timers_of(units)),)
    ran = manages(systemd_dir)
    if ran:
        for command in commands:
            _systemctl(*command)
    ours = removable(units, systemd_dir)
    for name in ours:
        try:
            (systemd_dir / name).unlink()
        except OSError as exc:
            raise ProvisionerError(f"cannot remove {systemd_dir / name}: {exc.strerror or exc}",
                                   hint="run as root, or pass --systemd-dir") from None
    if ran:
        _systemctl("daemon-reload")
    return TimersResult(status(units, systemd_dir).units,
                        tuple(" ".join(("systemctl", *c)) for c in (*commands, ("daemon-reload",))),
                        ran, ours)


def removable(units: dict[str, str], systemd_dir: Path) -> tuple[str, ...]:
    """The unit files in the folder that this command wrote (other files are never removed)."""
    return tuple(name for name in units
                 if _file_state(systemd_dir / name, units[name]) in ("installed", "differs"))


def status(units: dict[str, str], systemd_dir: Path) -> TimersResult:
    """Each unit file as found; whether each timer is enabled and active, where systemd
    manages the folder."""
    managed = manages(systemd_dir)
    states = []
    for name, text in units.items():
        path = systemd_dir / name
        enabled = active = None
        if managed and name.endswith(".timer"):
            enabled, active = _systemctl("is-enabled", name), _systemctl("is-active", name)
        states.append(UnitState(name, path, _file_state(path, text), enabled, active))
    return TimersResult(tuple(states), (), managed)
