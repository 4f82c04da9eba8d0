"""Web hosts through Ansible: run a playbook with ansible-runner, get the result as data.

``run_playbook`` generates the runner's private data dir under the state dir
(inventory from ``models.Inventory``: address, port, user, key, python, and
host-key checking against ``settings.known_hosts_file``), passes extravars
explicitly on every run (ansible-runner would otherwise reuse the last ones from
``env/extravars``), streams events to a progress callback and returns a
``RunResult`` (ansible_events.py reads the events). deploy.py is the web step on top.

No secret ever goes through Ansible: certificates' keys are installed by the host agent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ExternalError, UsageError
from ..lab.layout import LabPaths
from ..paths import PLAYBOOK_DIR
from ..registry.models import Host, Inventory
from . import hostlib
from .agent import HOST_LIB, REMOTE_PYTHON
from .ansible_events import ProgressCallback, RunResult, parse_events, progress_of

PING_PLAYBOOK = "ping.yml"
KEPT_RUNS = 20  # artifact folders of earlier runs kept for inspection
RUN_TIMEOUT = 1800
SOCKET_PATH_MAX = 104  # Unix socket paths; ssh's ControlPath is <dir>/<40-hex %C>


# =========================================================================== runner workspace


@dataclass(frozen=True)
class AnsibleDirs:
    """Where Ansible keeps its files on the controller (all inside the state dir)."""

    private_data: Path  # ansible-runner's private_data_dir (inventory, artifacts)
    bundles: Path
    control: Path  # ANSIBLE_SSH_CONTROL_PATH_DIR (ControlPersist sockets)
    local_tmp: Path
    remote_tmp: Path | None  # lab hosts only: the host *is* this machine


def ansible_dirs(inventory: Inventory) -> AnsibleDirs:
    """Folders under the state dir; a lab inventory uses the lab's own, so
    ``lab down`` can close the ControlPersist masters."""
    base = inventory.state_dir / "ansible"
    if inventory.settings.lab is not None:
        lab = LabPaths(inventory.settings.lab.dir)
        control, local_tmp, remote_tmp = lab.control_dir, lab.ansible_local_tmp, \
            lab.ansible_remote_tmp
    else:
        control, local_tmp, remote_tmp = base / "cp", base / "tmp", None
    if len(str(control)) + 41 > SOCKET_PATH_MAX:
        raise UsageError(f"state dir path too long for ssh control sockets: {control}",
                         hint=f"use a --state-dir whose path is under "
                              f"{SOCKET_PATH_MAX - 60} characters")
    return AnsibleDirs(private_data=base / "runner", bundles=base / "bundles",
                       control=control, local_tmp=local_tmp, remote_tmp=remote_tmp)


def host_vars(host: Host, inventory: Inventory, dirs: AnsibleDirs) -> dict[str, Any]:
    """Connection and path variables of one host for the generated runner inventory."""
    known_hosts = inventory.settings.known_hosts_file
    variables: dict[str, Any] = {
        "ansible_host": host.ssh_address,
        "ansible_port": host.ssh_port,
        "ansible_user": host.ssh_user,
        "ansible_ssh_private_key_file": str(host.ssh_key_file),
        "ansible_python_interpreter": REMOTE_PYTHON,
        "ansible_ssh_common_args": (f"-o UserKnownHostsFile={known_hosts} "
                                    "-o GlobalKnownHostsFile=/dev/null "
                                    "-o StrictHostKeyChecking=yes"),
        "ansible_become": host.ssh_user != "root",
        "web_root": str(host.web_root),
        "nginx_sites_dir": str(host.nginx_sites_dir),
        "nginx_binary": host.nginx_binary,
        "nginx_main_config": str(host.nginx_main_config),
        "rejected_dir": str(rejected_dir(host)),
    }
    if host.lab and dirs.remote_tmp is not None:
        variables["ansible_remote_tmp"] = str(dirs.remote_tmp)
    return variables


def rejected_dir(host: Host) -> Path:
    """Vhost files nginx refused are kept here for inspection: ``<sites_dir>/../rejected``."""
    return host.nginx_sites_dir.parent / "rejected"


def runner_inventory(inventory: Inventory, dirs: AnsibleDirs) -> dict[str, Any]:
    return {"all": {"hosts": {name: host_vars(host, inventory, dirs)
                              for name, host in sorted(inventory.hosts.items())}}}


def runner_env(dirs: AnsibleDirs) -> dict[str, str]:
    """Environment of ansible-playbook: the venv's tools first, pipelining, strict host keys."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "/usr/bin:/bin")]),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(dirs.control),
        "ANSIBLE_LOCAL_TEMP": str(dirs.local_tmp),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_TIMEOUT": "15",
        "ANSIBLE_LIBRARY": str(PLAYBOOK_DIR / "library"),
        "ANSIBLE_MODULE_UTILS": str(HOST_LIB.parent),  # ships hostlib with the agent module
        "ANSIBLE_ROLES_PATH": str(PLAYBOOK_DIR / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }


def run_playbook(inventory: Inventory, playbook: str, *, hosts: Sequence[str],
                 extravars: Mapping[str, Any], progress: ProgressCallback | None = None
                 ) -> RunResult:
    """Run ``playbooks/<playbook>`` on ``hosts`` with exactly ``extravars``; never raises
    for a failed play (that is data), only when ansible-runner cannot run at all."""
    import ansible_runner  # slow to import: only when a run is wanted

    unknown = sorted(set(hosts) - set(inventory.hosts))
    if unknown:
        raise UsageError(f"unknown host {', '.join(unknown)}", hint="hosts are named in hosts.yml")
    dirs = ansible_dirs(inventory)
    for folder in (dirs.private_data / "inventory", dirs.control, dirs.local_tmp):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    inventory_file = dirs.private_data / "inventory" / "hosts.json"
    inventory_file.write_text(json.dumps(runner_inventory(inventory, dirs), indent=2) + "\n")
    events: list[Mapping[str, Any]] = []

    def on_event(event: Mapping[str, Any]) -> bool:
        events.append(event)
        step = progress_of(event)
        if step is not None and progress is not None:
            progress(step)
        return True

    started = time.monotonic()
    handlers = _signal_handlers()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(dirs.private_data),
            project_dir=str(PLAYBOOK_DIR),
            playbook=playbook,
            inventory=str(inventory_file),
            limit=",".join(hosts),
            extravars=dict(extravars),
            envvars=runner_env(dirs),
            suppress_env_files=True,
            event_handler=on_event,
            quiet=True,
            rotate_artifacts=KEPT_RUNS,
            forks=max(1, min(len(hosts), 50)),
            timeout=RUN_TIMEOUT,
        )
    except Exception as exc:  # ansible-runner raises its own and OS errors alike
        raise ExternalError("ansible", playbook, f"ansible-runner could not run: {exc}") from None
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    if runner.status == "canceled":  # Ctrl-C (or SIGTERM) stopped the playbook
        raise KeyboardInterrupt
    return parse_events(events, runner.status, runner.rc, _tail(runner),
                        round(time.monotonic() - started, 3))


def _signal_handlers() -> dict[int, Any]:
    """SIGINT's and SIGTERM's handlers: ansible-runner replaces them (in the main thread)
    with its own cancel flag and never puts them back, so a Ctrl-C after the first
    playbook (during verification) would be ignored. They are restored after each run."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}


def running_playbooks(inventory: Inventory) -> list[int]:
    """PIDs of ansible-playbook processes still working on this inventory's runner folder.

    SIGKILL of provisioner alone leaves its ansible-playbook child running without the
    inventory lock (the kernel drops the lock with the parent); a new run must not overlap
    it. Its command line names the runner inventory inside the state dir."""
    workspace = str(ansible_dirs(inventory).private_data) + os.sep
    found = []
    for pid in hostlib.pids():
        argv = hostlib.process_argv(pid)  # None: ended meanwhile, or not ours to read
        if argv and any(os.path.basename(arg) == "ansible-playbook" for arg in argv[:2]) \
                and any(arg.startswith(workspace) for arg in argv):
            found.append(pid)
    return sorted(found)


def _tail(runner: Any, lines: int = 15) -> str:
    try:
        text = runner.stdout.read()
    except (OSError, AttributeError):
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def ping(inventory: Inventory, hosts: Sequence[str] | None = None,
         progress: ProgressCallback | None = None) -> RunResult:
    """The no-op play (one ``ping`` per host): proves SSH + python and measures the floor."""
    return run_playbook(inventory, PING_PLAYBOOK, hosts=list(hosts or inventory.hosts),
                        extravars={}, progress=progress)
