"""hostlib: atomic writes, walks that never follow a symlink, and /proc inspection,
against the real file system and this machine's real processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from provisioner.hosts import hostlib


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --------------------------------------------------------------------------- atomic writes

def test_write_atomic_sets_the_mode_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "key.pem"
    hostlib.write_atomic(target, b"secret", mode=0o600)
    assert target.read_bytes() == b"secret" and _mode(target) == 0o600
    hostlib.write_atomic(target, b"other", mode=0o640, sync_folder=True)
    assert target.read_bytes() == b"other" and _mode(target) == 0o640
    assert os.listdir(tmp_path) == ["key.pem"]


def test_write_atomic_takes_the_content_in_pieces_as_they_are_made(tmp_path):
    target = tmp_path / "sweep.jsonl"
    made = []

    def lines():
        for i in range(3):
            made.append(i)
            yield f"{i}\n".encode()

    hostlib.write_atomic(target, lines())
    assert target.read_bytes() == b"0\n1\n2\n" and made == [0, 1, 2]
    hostlib.write_atomic(target, memoryview(b"whole"))
    assert target.read_bytes() == b"whole"


def test_write_atomic_without_a_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        hostlib.write_atomic(tmp_path / "a.txt", b"x", mode=None)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o640


def test_write_atomic_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(outside)
    hostlib.write_atomic(tmp_path / "link", b"new")
    assert outside.read_bytes() == b"keep"
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_bytes() == b"new"


def test_write_atomic_creates_folders_below_root_but_never_follows_one(tmp_path):
    root = tmp_path / "root"
    hostlib.write_atomic(root / "a" / "b.txt", b"x", root=root, mtime=1_000_000)
    assert (root / "a" / "b.txt").read_bytes() == b"x"
    assert (root / "a" / "b.txt").stat().st_mtime == 1_000_000
    (tmp_path / "elsewhere").mkdir()
    (root / "evil").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        hostlib.write_atomic(root / "evil" / "c.txt", b"x", root=root)
    assert os.listdir(tmp_path / "elsewhere") == []
    with pytest.raises(ValueError):
        hostlib.write_atomic(tmp_path / "outside.txt", b"x", root=root)


def test_write_atomic_without_create_needs_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        hostlib.write_atomic(tmp_path / "missing" / "a.txt", b"x", create=False)
    assert not (tmp_path / "missing").exists()


def test_write_atomic_takes_a_bare_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostlib.write_atomic("here.txt", b"x")
    assert (tmp_path / "here.txt").read_bytes() == b"x"


def test_write_at_writes_within_a_folder_descriptor(tmp_path):
    with hostlib.folder(str(tmp_path)) as dir_fd:
        hostlib.write_at(dir_fd, "f", b"data", 0o600)
        assert hostlib.read_at(dir_fd, "f")[0] == b"data"
        assert hostlib.unlink_at(dir_fd, "f") is True
        assert hostlib.unlink_at(dir_fd, "f") is False


# --------------------------------------------------------------------------- reading, paths

def test_reads_never_follow_a_symlink(tmp_path):
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert hostlib.read_bytes(tmp_path / "real") == b"x"
    assert hostlib.read_bytes(tmp_path / "link") is None
    assert hostlib.read_bytes(tmp_path / "missing") is None
    os.mkfifo(tmp_path / "fifo")
    assert hostlib.read_bytes(tmp_path / "fifo") is None  # and it did not hang


@pytest.mark.parametrize("rel,parts", [("a", ["a"]), ("a/b", ["a", "b"]), ("a/", ["a"]),
                                       (".", [])])
def test_split_rel_takes_plain_relative_paths(rel, parts):
    assert hostlib.split_rel(rel) == parts


@pytest.mark.parametrize("rel", ["", "/a", "..", "../a", "a/../b", "a//b", "./a", "a\x00"])
def test_split_rel_refuses_anything_else(rel):
    with pytest.raises(ValueError):
        hostlib.split_rel(rel)


def test_site_parts_must_be_strictly_below_the_web_root():
    assert hostlib.site_parts("/srv/www/dinkes", "/srv/www") == ["dinkes"]
    for bad in ("/srv/www", "/srv/other", ""):
        with pytest.raises(ValueError):
            hostlib.site_parts(bad, "/srv/www")


# --------------------------------------------------------------------------- /proc

def test_proc_stat_of_this_process():
    mine = hostlib.proc_stat(os.getpid())
    assert mine.ppid == os.getppid() and mine.state not in hostlib.ENDED_STATES
    assert mine.start_time > 0
    assert os.getpid() in hostlib.pids()
    assert hostlib.process_alive(os.getpid())


def test_a_process_that_does_not_exist():
    missing = 2 ** 22 + 1  # above the kernel's largest pid_max
    assert hostlib.proc_stat(missing) is None
    assert hostlib.process_argv(missing) is None
    assert hostlib.process_cmdline(missing) is None
    assert hostlib.process_exe(missing) is None
    assert hostlib.mount_namespace(missing) is None
    assert not hostlib.process_alive(missing) and not hostlib.process_alive(0)


def test_argv_cmdline_exe_and_children_of_a_child():
    code = "import sys; print(flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code, "x y"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # it runs python now (the exec is done)
        assert hostlib.process_argv(child.pid) == [sys.executable, "-c", code, "x y"]
        assert hostlib.process_cmdline(child.pid) == " ".join(child.args)
        assert hostlib.process_exe(child.pid) == os.path.realpath(sys.executable)
        assert child.pid in hostlib.children(os.getpid())
        assert hostlib.proc_stat(child.pid).start_time >= hostlib.proc_stat(
            os.getpid()).start_time
        assert hostlib.mount_namespace(child.pid) == os.readlink("/proc/self/ns/mnt")
    finally:
        child.communicate(b"")
    assert child.pid not in hostlib.children(os.getpid())


def test_a_zombie_counts_as_ended():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while hostlib.proc_stat(child.pid).state != "Z":
            time.sleep(0.01)  # it exits; not reaped yet
        assert not hostlib.process_alive(child.pid)
        assert hostlib.process_cmdline(child.pid) is None
        assert child.pid not in hostlib.children(os.getpid())
    finally:
        child.wait()
