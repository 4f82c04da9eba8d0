"""The inventory lock, with real processes: held, refused, killed, released, broken."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from provisioner.errors import LockedError
from provisioner.hosts import ansible
from provisioner.hosts.hostlib import process_alive
from provisioner.registry.load import load_inventory
from provisioner.safety.lock import LockHolder, inventory_lock, run_lock

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys
from provisioner.safety.lock import inventory_lock
with inventory_lock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin
"""
HOLDER_COMMAND = "provisioner onboard --all"


class Holder:
    """A separate Python process holding the lock until released or killed."""

    def __init__(self, state_dir: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(state_dir), HOLDER_COMMAND], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PROVISIONER_OPERATOR": "budi"})
        assert self.process.stdout.readline() == "locked\n"
        self.pid = self.process.pid

    def release(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(10) == 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process.stdin.close()


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield started
    for holder in started:
        if holder.process.poll() is None:
            holder.kill()


def hold(state_dir: Path, holders: list[Holder]) -> Holder:
    holder = Holder(state_dir)
    holders.append(holder)
    return holder


def test_a_second_run_is_refused_naming_the_holder(tmp_path, holders):
    holder = hold(tmp_path, holders)
    with pytest.raises(LockedError) as caught:
        with inventory_lock(tmp_path, "provisioner offboard dlh"):
            pytest.fail("the lock was taken twice")
    message = str(caught.value)
    assert message.startswith(f"inventory locked by budi (pid {holder.pid} on "
                              f"{socket.gethostname()}, '{HOLDER_COMMAND}') since ")
    assert "wait for it to finish" in message and "--break-lock" in message
    assert caught.value.exit_code == 1


def test_the_lock_file_records_the_holder_privately(tmp_path, monkeypatch):
    monkeypatch.setenv("PROVISIONER_OPERATOR", "ayu")
    with inventory_lock(tmp_path / "state", "provisioner onboard dinkes") as info:
        assert info.path == tmp_path / "state" / "provisioner.lock"
        assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
        recorded = json.loads(info.path.read_text())
        assert recorded == {"operator": "ayu", "pid": os.getpid(),
                            "hostname": socket.gethostname(),
                            "command": "provisioner onboard dinkes",
                            "started_at": info.holder.started_at}
        assert info.stale is None and info.broken is None and info.warning is None
    assert info.path.read_text() == ""  # released cleanly


def test_a_run_killed_while_holding_is_reported_and_taken_over(tmp_path, holders):
    holder = hold(tmp_path, holders)
    holder.kill()
    with inventory_lock(tmp_path, "provisioner onboard dinkes") as info:
        assert info.stale.pid == holder.pid and info.stale.command == HOLDER_COMMAND
        assert info.warning.startswith(f"previous run by budi (pid {holder.pid} on ")
        assert "ended without releasing the inventory lock cleanly; taking over" in info.warning
        assert info.holder.pid == os.getpid()


def fake_playbook(tmp_path: Path, runner_dir: Path) -> subprocess.Popen:
    """A process shaped like ansible-runner's child: python, .../ansible-playbook, -i <runner
    inventory>, that runs until killed."""
    script = tmp_path / "bin" / "ansible-playbook"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import time\ntime.sleep(120)\n")
    return subprocess.Popen([sys.executable, str(script), "-i",
                             str(runner_dir / "inventory" / "hosts.json"), "onboard.yml"])


def test_a_killed_runs_ansible_playbook_keeps_the_next_run_out_until_it_ends(
        tmp_path, holders, sample):
    """SIGKILL of provisioner alone: the kernel drops its lock, its ansible-playbook child
    runs on; the next run is refused, naming that process, until it ends."""
    state_dir = Path(tempfile.mkdtemp(prefix="pl-"))  # short: ssh control socket paths
    inventory = load_inventory(sample.root, state_dir)
    leftovers = lambda: ansible.running_playbooks(inventory)  # noqa: E731
    holder = hold(inventory.state_dir, holders)
    orphan = fake_playbook(tmp_path, ansible.ansible_dirs(inventory).private_data)
    elsewhere = fake_playbook(tmp_path, tmp_path / "another-state" / "ansible" / "runner")
    try:
        deadline = time.monotonic() + 5
        while ansible.running_playbooks(inventory) != [orphan.pid]:
            assert time.monotonic() < deadline, ansible.running_playbooks(inventory)
            time.sleep(0.02)
        holder.kill()
        with pytest.raises(LockedError) as caught:
            with run_lock(inventory.state_dir, "provisioner onboard dinkes", leftovers=leftovers):
                pytest.fail("a run overlapping the orphaned ansible-playbook was let in")
        assert f"ansible-playbook is still running (pid {orphan.pid})" in str(caught.value)
        assert caught.value.hint.startswith(f"or stop it: kill {orphan.pid}")
        orphan.kill()
        orphan.wait()
        reported: list[str] = []
        with run_lock(inventory.state_dir, "provisioner onboard dinkes", report=reported.append,
                      leftovers=leftovers) as info:
            assert info.stale.pid == holder.pid
        assert reported and "ended without releasing" in reported[0]
    finally:
        for process in (orphan, elsewhere):
            process.kill()
            process.wait()
        shutil.rmtree(state_dir)


def test_a_run_that_ends_normally_releases_cleanly(tmp_path, holders):
    hold(tmp_path, holders).release()
    with inventory_lock(tmp_path, "provisioner onboard dinkes") as info:
        assert info.stale is None and info.warning is None


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError):
        with inventory_lock(tmp_path, "provisioner onboard dinkes"):
            raise RuntimeError("apply failed")
    with inventory_lock(tmp_path, "provisioner onboard dinkes") as info:
        assert info.stale is None


def test_the_same_process_cannot_take_it_twice(tmp_path):
    with inventory_lock(tmp_path, "provisioner onboard --all"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()} "):
            with inventory_lock(tmp_path, "provisioner onboard --all"):
                pass


# --------------------------------------------------------------------------- --break-lock

def test_breaking_a_live_holder_on_this_host_needs_confirmation(tmp_path, holders):
    holder = hold(tmp_path, holders)
    with pytest.raises(LockedError, match=f"pid {holder.pid} is still running on this host: "
                                          "breaking .* needs confirmation"):
        with inventory_lock(tmp_path, "provisioner onboard dinkes", break_lock=True):
            pass
    with inventory_lock(tmp_path, "provisioner onboard dinkes", break_lock=True,
                        confirmed=True) as info:
        assert info.broken.pid == holder.pid
        assert info.warning.startswith(f"broke the inventory lock of budi (pid {holder.pid} ")
        # the hung holder still has the old, unlinked file: nobody else gets in
        with pytest.raises(LockedError, match=f"pid {os.getpid()} "):
            with inventory_lock(tmp_path, "provisioner renew"):
                pass


def _held_by_record(tmp_path: Path, holder: LockHolder) -> int:
    """Hold the lock on an fd of this test (as a process on NFS would) recording ``holder``."""
    fd = os.open(tmp_path / "provisioner.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps(holder.__dict__).encode())
    return fd


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_held_lock_whose_holder_is_dead_here_breaks_without_confirmation(tmp_path):
    dead = LockHolder("citra", dead_pid(), socket.gethostname(), "provisioner renew",
                      "2025-03-01T08:00:00+00:00")
    fd = _held_by_record(tmp_path, dead)
    try:
        with pytest.raises(LockedError, match="wait for it to finish"):
            with inventory_lock(tmp_path, "provisioner onboard dinkes"):
                pass
        with inventory_lock(tmp_path, "provisioner onboard dinkes", break_lock=True) as info:
            assert info.broken == dead
    finally:
        os.close(fd)


def test_a_holder_on_another_host_cannot_be_checked_so_breaking_needs_confirmation(tmp_path):
    remote = LockHolder("dewi", 4242, "ops-2.paserkab.go.id", "provisioner onboard --all",
                        "2025-03-01T08:00:00+00:00")
    fd = _held_by_record(tmp_path, remote)
    try:
        with pytest.raises(LockedError, match="cannot be checked from this host"):
            with inventory_lock(tmp_path, "provisioner onboard dinkes", break_lock=True):
                pass
        with inventory_lock(tmp_path, "provisioner onboard dinkes", break_lock=True,
                            confirmed=True) as info:
            assert info.broken == remote
    finally:
        os.close(fd)


def test_a_holder_that_has_not_recorded_itself_yet(tmp_path):
    fd = os.open(tmp_path / "provisioner.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(LockedError, match="locked by another run .*; wait"):
            with inventory_lock(tmp_path, "provisioner onboard dinkes"):
                pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- process_alive

def test_process_alive():
    assert process_alive(os.getpid())
    assert not process_alive(dead_pid())
    assert not process_alive(0) and not process_alive(-1)


def test_a_zombie_counts_as_ended():
    process = subprocess.Popen(["true"])
    stat_file = Path(f"/proc/{process.pid}/stat")
    deadline = time.monotonic() + 10
    while stat_file.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    try:
        assert not process_alive(process.pid)
    finally:
        process.wait()
