"""Web hosts through Ansible: run a playbook with ansible-runner, get the result as data.

* ``run_playbook`` generates the runner's private data dir under the state dir
  (inventory from ``models.Inventory``: address, port, user, key, python, and
  host-key checking against ``settings.known_hosts_file``), passes extravars
  explicitly on every run (ansible-runner would otherwise reuse the last ones from
  ``env/extravars``), streams events to a progress callback and returns a
  ``RunResult``: status, rc, per-host stats, failed tasks with their messages and
  every module result.
* ``deploy_sites`` ships each host's site files and vhosts in ONE transfer (a tar.gz
  bundle inside the call of the ``provisioner_vhosts`` module: one task per host,
  tested swap, one reload), then maps the run to one ``AgencyDeploy`` per agency.

No secret ever goes through Ansible: certificates' keys are installed by hosts.py.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import signal
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import ExternalError, UsageError
from ..lab.lab import LabPaths
from ..paths import PLAYBOOK_DIR
from ..plan import Outcome
from ..registry.models import Agency, Host, Inventory
from ..site import render as site
from . import hostlib
from .agent import HOST_LIB, REMOTE_PYTHON

DEPLOY_PLAYBOOK = "onboard.yml"
PING_PLAYBOOK = "ping.yml"
VHOST_MODULE = "provisioner_vhosts"
BUNDLE_SCHEMA = "provisioner/bundle/v1"
KEPT_RUNS = 20  # artifact folders of earlier runs kept for inspection
RUN_TIMEOUT = 1800
SOCKET_PATH_MAX = 104  # Unix socket paths; ssh's ControlPath is <dir>/<40-hex %C>

ProgressCallback = Callable[["Progress"], None]


# =========================================================================== result data


@dataclass(frozen=True)
class Progress:
    """One step of one host, as the CLI shows it (a line or bar per host)."""

    host: str
    task: str
    state: str  # started, ok, changed, failed, unreachable, skipped


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failures: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str
    unreachable: bool = False


@dataclass(frozen=True)
class TaskResult:
    host: str
    task: str
    action: str
    failed: bool
    result: Mapping[str, Any]


@dataclass(frozen=True)
class RunResult:
    status: str  # successful, failed, timeout, canceled
    rc: int
    stats: Mapping[str, HostStats]
    failures: tuple[TaskFailure, ...]
    results: tuple[TaskResult, ...]
    output_tail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def result_of(self, host: str, action: str) -> TaskResult | None:
        """The last result of a module on a host (short or fully qualified name)."""
        found = [r for r in self.results
                 if r.host == host and r.action.rsplit(".", 1)[-1] == action]
        return found[-1] if found else None

    def failure_of(self, host: str) -> TaskFailure | None:
        found = [f for f in self.failures if f.host == host]
        return found[0] if found else None


_STATE_OF_EVENT = {
    "runner_on_start": "started",
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


def progress_of(event: Mapping[str, Any]) -> Progress | None:
    """The progress step an ansible-runner event stands for (None: not a host step)."""
    state = _STATE_OF_EVENT.get(event.get("event", ""))
    data = event.get("event_data") or {}
    if state is None or not data.get("host"):
        return None
    if state == "ok" and (data.get("res") or {}).get("changed"):
        state = "changed"
    if state == "failed" and data.get("ignore_errors"):
        state = "ok"
    return Progress(host=data["host"], task=data.get("task", ""), state=state)


def failure_message(result: Mapping[str, Any]) -> str:
    """The most telling text of a failed or unreachable task's result.

    A crashed module says only "MODULE FAILURE": its stderr's last line says why.
    """
    texts = {key: " ".join(str(result.get(key) or "").replace("\r", "").split("\n")).strip()
             for key in ("msg", "module_stderr", "stderr", "module_stdout", "stdout")}
    stderr_lines = str(result.get("module_stderr") or "").strip().splitlines()
    if texts["msg"].startswith("MODULE FAILURE") and stderr_lines:
        return f"module crashed: {stderr_lines[-1].strip()}"
    return next((text for text in texts.values() if text), "failed without a message")


def parse_events(events: Iterable[Mapping[str, Any]], status: str, rc: int,
                 output_tail: str = "", seconds: float = 0.0) -> RunResult:
    """Turn ansible-runner events into a ``RunResult`` (pure: tested with recorded events)."""
    stats: dict[str, HostStats] = {}
    failures: list[TaskFailure] = []
    results: list[TaskResult] = []
    for event in events:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            stats = _stats(data)
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            host, task, res = data.get("host", ""), data.get("task", ""), data.get("res") or {}
            failed = kind != "runner_on_ok" and not data.get("ignore_errors")
            if failed:
                failures.append(TaskFailure(host, task, failure_message(res),
                                            unreachable=kind == "runner_on_unreachable"))
            results.append(TaskResult(host, task, data.get("task_action", ""), failed, res))
    return RunResult(status=status, rc=rc, stats=stats, failures=tuple(failures),
                     results=tuple(results), output_tail=output_tail, seconds=seconds)


def _stats(data: Mapping[str, Any]) -> dict[str, HostStats]:
    counters = {"ok": "ok", "changed": "changed", "failures": "failures",
                "unreachable": "dark", "skipped": "skipped"}
    hosts = set()
    for key in counters.values():
        hosts.update((data.get(key) or {}).keys())
    return {host: HostStats(**{name: int((data.get(key) or {}).get(host, 0))
                               for name, key in counters.items()})
            for host in sorted(hosts)}


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


# =========================================================================== bundles


@dataclass(frozen=True)
class SiteBundle:
    """Everything one agency gets on its host: site files and vhost, rendered on the controller."""

    slug: str
    host: str
    site_dir: Path
    vhost_path: Path
    vhost: bytes
    files: Mapping[str, bytes] = field(repr=False)


def site_bundle(agency: Agency, inventory: Inventory, *, tls_ready: bool) -> SiteBundle:
    """Render one hosted agency with site.py (``tls_ready``: its certificate is installed)."""
    host = inventory.hosts[agency.host]
    return SiteBundle(
        slug=agency.slug,
        host=host.name,
        site_dir=site.site_dir(agency, host),
        vhost_path=site.vhost_path(agency, host),
        vhost=site.render_vhost(agency, host, inventory.settings, tls_ready=tls_ready),
        files=site.render_site(agency),
    )


def bundle_bytes(bundles: Sequence[SiteBundle]) -> bytes:
    """One host's bundle as a deterministic tar.gz (same input, same bytes)."""
    spec = {
        "schema": BUNDLE_SCHEMA,
        "manifest_path": site.MANIFEST_PATH,
        "agencies": [{"slug": b.slug, "site_dir": str(b.site_dir), "vhost_path": str(b.vhost_path)}
                     for b in sorted(bundles, key=lambda b: b.slug)],
    }
    members = {"bundle.json": json.dumps(spec, indent=2).encode()}
    for b in bundles:
        members[f"vhosts/{b.slug}.conf"] = b.vhost
        for rel, data in b.files.items():
            members[f"sites/{b.slug}/{rel}"] = data
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[name]))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


# =========================================================================== deploy


@dataclass(frozen=True)
class AgencyDeploy:
    slug: str
    host: str
    status: str  # changed, ok, failed
    reason: str | None
    vhost: str  # created, updated, unchanged, rejected, not applied
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept_edited: tuple[str, ...] = ()
    rejected_file: str | None = None
    drift_file: str | None = None  # where the hand-edited vhost it replaced was kept

    def outcome(self) -> Outcome:
        """The step's result for this agency in plan.py's common form (kind "web")."""
        return Outcome(self.slug, "web", self.status, self.reason if self.status == "failed"
                       else self.summary())

    def summary(self) -> str:
        parts = [f"vhost {self.vhost}"] if self.vhost in ("created", "updated") else []
        if self.drift_file:
            parts = [f"vhost restored (drift: the hand-edited copy is kept in {self.drift_file})"]
        for what, files in (("created", self.created), ("updated", self.updated),
                            ("removed", self.removed)):
            if files:
                parts.append(f"{len(files)} file{'s' if len(files) > 1 else ''} {what}")
        if self.kept_edited:
            n = len(self.kept_edited)
            parts.append(f"kept {n} file{'s' if n > 1 else ''} the agency edited: "
                         f"{', '.join(self.kept_edited)}")
        return ", ".join(parts) or "nothing to change"


@dataclass(frozen=True)
class HostDeploy:
    host: str
    reloaded: bool
    nginx_tests: int
    error: str | None


@dataclass(frozen=True)
class DeployReport:
    agencies: Mapping[str, AgencyDeploy]
    hosts: Mapping[str, HostDeploy]
    run: RunResult

    @property
    def failed(self) -> list[AgencyDeploy]:
        return [a for a in self.agencies.values() if a.status == "failed"]


def deploy_outcomes(run: RunResult, bundles: Sequence[SiteBundle]) -> DeployReport:
    """One outcome per agency from the run (pure): the module's own report when it ran,
    else the host's failure (unreachable, a task before it failed, the run never started)."""
    agencies: dict[str, AgencyDeploy] = {}
    hosts: dict[str, HostDeploy] = {}
    for host in sorted({b.host for b in bundles}):
        task = run.result_of(host, VHOST_MODULE)
        reported = (task.result.get("agencies") or {}) if task else {}
        error = None if reported else _host_error(run, host)
        hosts[host] = HostDeploy(host, bool(task and task.result.get("reloaded")),
                                 int(task.result.get("nginx_tests", 0)) if task else 0, error)
        for b in (b for b in bundles if b.host == host):
            agencies[b.slug] = _agency_deploy(b, reported.get(b.slug), error)
    return DeployReport(agencies=agencies, hosts=hosts, run=run)


def _host_error(run: RunResult, host: str) -> str:
    failure = run.failure_of(host)
    if failure is not None:
        what = "unreachable" if failure.unreachable else f"task '{failure.task}' failed"
        return f"host {host} {what}: {failure.message}"
    tail = f": {run.output_tail.splitlines()[-1]}" if run.output_tail.strip() else ""
    return f"ansible run {run.status} (rc {run.rc}) before reaching {host}{tail}"


def _agency_deploy(bundle: SiteBundle, reported: Mapping[str, Any] | None,
                   host_error: str | None) -> AgencyDeploy:
    if reported is None:
        return AgencyDeploy(bundle.slug, bundle.host, "failed",
                            host_error or f"no result for {bundle.slug} from {bundle.host}",
                            "not applied")
    files = reported.get("files") or {}
    return AgencyDeploy(
        slug=bundle.slug,
        host=bundle.host,
        status=reported.get("status", "failed"),
        reason=reported.get("reason"),
        vhost=reported.get("vhost", "not applied"),
        created=tuple(files.get("created", ())),
        updated=tuple(files.get("updated", ())),
        removed=tuple(files.get("removed", ())),
        kept_edited=tuple(files.get("kept_edited", ())),
        rejected_file=reported.get("rejected_file"),
        drift_file=reported.get("drift_file"),
    )


def deploy_sites(inventory: Inventory, bundles: Sequence[SiteBundle],
                 progress: ProgressCallback | None = None) -> DeployReport:
    """Ship and apply every bundle: one transfer and one module call per host, one reload."""
    slugs = [b.slug for b in bundles]
    if len(set(slugs)) != len(slugs):
        raise UsageError("an agency appears twice in one deploy")
    dirs = ansible_dirs(inventory)
    run_dir = dirs.bundles / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    run_dir.mkdir(mode=0o700, parents=True)
    try:
        by_host: dict[str, list[SiteBundle]] = {}
        for b in bundles:
            by_host.setdefault(b.host, []).append(b)
        for host, host_bundles in by_host.items():
            (run_dir / f"{host}.b64").write_bytes(base64.b64encode(bundle_bytes(host_bundles)))
        run = run_playbook(inventory, DEPLOY_PLAYBOOK, hosts=sorted(by_host),
                           extravars={"bundle_dir": str(run_dir)}, progress=progress)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return deploy_outcomes(run, bundles)
