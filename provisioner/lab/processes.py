"""The lab's processes: how each server starts, starting and stopping them by the PID files
the lab wrote (checked against /proc/PID/cmdline and exe before any signal), with the
processes below them and, for a production-shaped host, everything in its mount namespace."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import LabError
from ..hosts import hostlib
from .keys import write_file
from .layout import LabPaths
from .probes import READY_PROBE_TIMEOUT, Probe

READY_TIMEOUT = 20.0  # seconds a server may take to answer its probe after start
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL_LINES = 25


_children: dict[int, subprocess.Popen] = {}
"""Servers started by this Python process, so that stopping them also reaps them."""


def read_pid(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    return hostlib.process_cmdline(pid) is not None


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (e.g. sshd's per-connection processes)."""
    parents: dict[int, list[int]] = {}
    for other in hostlib.pids():
        stat = hostlib.proc_stat(other)
        if stat and stat.state not in hostlib.ENDED_STATES:
            parents.setdefault(stat.ppid, []).append(other)
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def namespace_members(pid: int) -> list[int]:
    """Every other live process in the mount namespace of ``pid`` (none when it shares
    this process's namespace: that is the machine's, not a lab host's)."""
    namespace = hostlib.mount_namespace(pid)
    if namespace is None or namespace == hostlib.mount_namespace(os.getpid()):
        return []
    return [other for other in hostlib.pids()
            if other != pid and hostlib.mount_namespace(other) == namespace]


def terminate(pids: Iterable[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, then SIGKILL what is left; reap the ones that are our children."""
    pids = [p for p in pids if _alive(p)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    for pid in list(_children):
        if _children[pid].poll() is not None:
            del _children[pid]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class ServerSpec:
    """How to start one lab server and how to tell it is ours and healthy."""

    name: str  # "ns1", "web1-nginx", ...
    role: str
    address: str  # shown to the user: "127.0.0.10:53"
    argv: tuple[str, ...]
    cwd: Path
    log: Path  # stdout and stderr of the process
    marker: str  # a string unique to this lab in the process's command line (its config path)
    probe: Callable[[float], Probe] = field(compare=False)  # timeout -> result
    env: dict[str, str] = field(default_factory=dict, compare=False)
    extra_logs: tuple[Path, ...] = ()
    program: str | None = None  # what the process runs once started, when not argv[0]
    stage: int = 1  # started after every server of a lower stage answers
    namespace: bool = False  # holds a mount namespace: stopping it stops all inside

    @property
    def executable(self) -> str:
        return self.program or self.argv[0]


@dataclass(frozen=True)
class ServerResult:
    name: str
    role: str
    address: str
    pid: int | None
    action: str  # started | already up | stopped | not running | stale pid file removed


def running_pid(paths: LabPaths, spec: ServerSpec) -> int | None:
    """The PID from the lab's PID file, if that process is alive and is this server.

    A PID file can outlive its process and the PID be reused: the process must run
    the server's program and name this lab's config file on its command line.
    """
    pid = read_pid(paths.pid_file(spec.name))
    if pid is None:
        return None
    cmdline = hostlib.process_cmdline(pid)
    exe = hostlib.process_exe(pid)
    if cmdline and spec.marker in cmdline and exe \
            and os.path.realpath(exe) == os.path.realpath(spec.executable):
        return pid
    return None


def spawn(paths: LabPaths, spec: ServerSpec) -> int:
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log, "ab") as log:
        log.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} "
                  f"provisioner lab: {' '.join(spec.argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=spec.cwd,
                                    env={**os.environ, **spec.env}, start_new_session=True)
        except OSError as exc:
            raise LabError(spec.name, f"cannot start {spec.argv[0]}: {exc}",
                           hint="is the Debian package installed?") from None
    _children[proc.pid] = proc
    write_file(paths.pid_file(spec.name), f"{proc.pid}\n")
    return proc.pid


def failure(spec: ServerSpec, what: str) -> LabError:
    logs = "\n".join(f"--- {log}:\n{tail(log)}" for log in (spec.log, *spec.extra_logs)
                     if log.exists())
    return LabError(spec.name, f"{what}\n{logs}",
                    hint="fix the cause shown in the log, then run 'provisioner lab up' again")


def start(paths: LabPaths, specs: list[ServerSpec]) -> list[ServerResult]:
    """Start the servers that are not running, then wait until every one answers.

    Servers already running are waited for too: one started a moment ago by an
    earlier, failed ``lab up`` may still be coming up.
    """
    results: dict[str, ServerResult] = {}
    pending: dict[str, tuple[ServerSpec, int, str]] = {}
    for spec in specs:
        pid = running_pid(paths, spec)
        if pid is not None:
            pending[spec.name] = (spec, pid, "already up")
            continue
        paths.pid_file(spec.name).unlink(missing_ok=True)
        pending[spec.name] = (spec, spawn(paths, spec), "started")
    deadline = time.monotonic() + READY_TIMEOUT
    while pending:
        for name, (spec, pid, action) in list(pending.items()):
            if not _alive(pid):
                child = _children.get(pid)
                code = child.returncode if child else "?"
                paths.pid_file(name).unlink(missing_ok=True)
                raise failure(spec, f"exited during start (exit code {code})")
            if spec.probe(READY_PROBE_TIMEOUT).ok:
                results[name] = ServerResult(name, spec.role, spec.address, pid, action)
                del pending[name]
        if pending and time.monotonic() > deadline:
            spec = next(iter(pending.values()))[0]
            raise failure(spec, f"no healthy answer within {READY_TIMEOUT:.0f}s")
        if pending:
            time.sleep(0.05)
    return [results[s.name] for s in specs]


def stop(paths: LabPaths, specs: list[ServerSpec]) -> list[ServerResult]:
    results, pids = [], []
    for spec in specs:
        pid_file = paths.pid_file(spec.name)
        pid = running_pid(paths, spec)
        if pid is not None:
            pids.append(pid)
            pids += _descendants(pid)  # sshd connections, nginx workers
            if spec.namespace:  # whatever else runs in it: its mounts go with the last
                pids += namespace_members(pid)
            results.append(ServerResult(spec.name, spec.role, spec.address, pid, "stopped"))
        elif pid_file.exists():
            results.append(ServerResult(spec.name, spec.role, spec.address,
                                        read_pid(pid_file), "stale pid file removed"))
        else:
            results.append(ServerResult(spec.name, spec.role, spec.address, None,
                                        "not running"))
    terminate(pids)
    for spec in specs:
        paths.pid_file(spec.name).unlink(missing_ok=True)
    return results


def close_ssh_masters(paths: LabPaths) -> int:
    """Close Ansible's ControlPersist masters whose sockets live in the lab dir.

    ``ssh -O exit`` on every socket first; then any ssh process whose command
    line still names a control path in the lab dir is stopped.
    """
    pattern = re.compile(r"ControlPath=\"?" + re.escape(str(paths.dir)) + "/")
    masters = []
    for pid in hostlib.pids():
        cmdline = hostlib.process_cmdline(pid)
        if cmdline and cmdline.split()[0].endswith("ssh") and pattern.search(cmdline):
            masters.append(pid)
    sockets = [s for s in paths.control_dir.glob("*") if s.is_socket()]
    for sock in sockets:
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"],
                       capture_output=True, timeout=10)
    terminate(masters)
    return max(len(masters), len(sockets))
