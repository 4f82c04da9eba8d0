"""Standard-library helpers shared by the controller and the host agent.

This file is imported on the controller (``from ..hosts import hostlib``) and runs on web
hosts: ``provisioner/hosts/agent.py`` sends its source with the agent's
(``playbooks/library/provisioner_vhosts.py``), and Ansible ships it with that module as
``ansible.module_utils.hostlib``. So it uses nothing but the standard library and keeps
to the Python the agent supports on a host (3.8: no ``match``, no ``X | Y`` outside
annotations), and it never imports anything of provisioner's.

What it holds: atomic file writes (one temp file in the same folder, mode set on its
descriptor before any byte, fsync, rename), walks below a trusted folder that never
follow a symlink, path safety for relative paths, the site-file plan (what a deploy does
to each file of an agency's site), and /proc inspection.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import os
import posixpath
import stat

FILE_MODE = 0o644
DIR_MODE = 0o755

# =========================================================================== paths

# Folders below a trusted folder (the web root, the sites dir, the TLS dir: named by the
# controller) are never trusted: an agency writes into its site, and a symlink it plants
# (before a run or during one) must not redirect root's reads or writes. So every path
# below a trusted folder is walked one component at a time, each opened with O_NOFOLLOW
# relative to its parent's descriptor; files are created O_EXCL under a temp name and
# renamed within their folder's descriptor; modes and times are set on descriptors.

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO an agency planted must not hang the agent.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def file_mode(mode):
    """The mode a site file gets on the host: at most rw-r--r--, never setuid/setgid/sticky."""
    return int(mode) & FILE_MODE


def dir_mode(mode):
    """The mode a site folder gets on the host: at most rwxr-xr-x, never setgid/sticky."""
    return int(mode) & DIR_MODE


def split_rel(rel):
    """The components of a relative path without '..' (ValueError otherwise); [] for '.'."""
    norm = posixpath.normpath(rel) if rel else ""
    if not rel or rel.startswith("/") or norm.startswith("..") or "\x00" in rel \
            or norm != rel.rstrip("/"):
        raise ValueError("not a safe relative path: %r" % rel)
    return [] if norm == "." else norm.split("/")


def below_root(path, root):
    """(folders below ``root``, file name) of ``path``; ValueError when it is not below."""
    parts = split_rel(os.path.relpath(path, root))
    if not parts:
        raise ValueError("%s is not below %s" % (path, root))
    return parts[:-1], parts[-1]


def site_parts(site_dir, web_root):
    """The folders from the web root down to a site; ValueError unless strictly below."""
    try:
        parts = split_rel(os.path.relpath(site_dir, web_root)) if site_dir else []
    except ValueError:
        parts = []
    if not parts:
        raise ValueError("site folder %s is not inside %s" % (site_dir, web_root))
    return parts


def inside(path, folder_path):
    """True when ``path`` (after resolving symlinks) is ``folder_path`` or below it."""
    real, base = os.path.realpath(path), os.path.realpath(folder_path)
    return real == base or real.startswith(base.rstrip("/") + "/")


def strictly_inside(path, folder_path):
    """True when ``path`` is below ``folder_path`` (not itself) and not a symlink."""
    return inside(path, folder_path) and not os.path.islink(path) and \
        os.path.realpath(path) != os.path.realpath(folder_path)


# =========================================================================== folders

def open_below(dir_fd, parts, create=False):
    """A new descriptor of the folder ``parts`` below ``dir_fd``, never through a symlink
    (ELOOP/ENOTDIR instead); missing folders are created (0755) when ``create``."""
    fd = os.dup(dir_fd)
    try:
        for name in parts:
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    pass
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def below(dir_fd, parts, create=False):
    fd = open_below(dir_fd, parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def open_folder(root, parts=(), create=False):
    """A new descriptor of ``root``/``parts``: ``root`` is trusted (a folder the controller
    named, symlinks in its path resolved once), ``parts`` are walked without following."""
    if create:
        os.makedirs(root, mode=DIR_MODE, exist_ok=True)
    root_fd = os.open(os.path.realpath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return open_below(root_fd, parts, create)
    finally:
        os.close(root_fd)


@contextlib.contextmanager
def folder(root, parts=(), create=False):
    fd = open_folder(root, parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def none_if_absent(exc):
    """None when ``exc`` says missing, or a symlink (ELOOP) on the way: not a file we
    generated. Anything else is raised again."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return None
    raise exc


@contextlib.contextmanager
def parent_folder(path, root=None, create=False):
    """(descriptor of the folder that holds ``path``, the file's name): the folders between
    the trusted ``root`` (default: the file's own folder) and the file are walked without
    following a symlink, and created when ``create``; ValueError unless below ``root``."""
    root = root or os.path.dirname(path) or "."
    parents, name = below_root(path, root)
    with folder(root, parents, create) as parent:
        yield parent, name


# =========================================================================== reading

def open_file_at(dir_fd, name):
    """(descriptor, stat) of the regular file ``name`` in ``dir_fd``; None when missing,
    a symlink or not a regular file."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        return none_if_absent(exc)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info


def read_all(fd):
    """Everything left to read from ``fd``."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_at(dir_fd, name):
    """(content, stat) of the regular file ``name`` in ``dir_fd``; None when missing, a
    symlink or not a regular file."""
    found = open_file_at(dir_fd, name)
    if found is None:
        return None
    fd, info = found
    try:
        return read_all(fd), info
    finally:
        os.close(fd)


def read_below(dir_fd, rel):
    """(content, stat) of the regular file at ``rel`` below ``dir_fd``, None when absent
    (or reached through a symlink)."""
    parts = split_rel(rel)
    try:
        with below(dir_fd, parts[:-1]) as parent:
            return read_at(parent, parts[-1])
    except OSError as exc:
        return none_if_absent(exc)


def read_file(path, root=None):
    """(content, stat) of the regular file ``path`` below the trusted ``root`` (default:
    its own folder); None when absent."""
    try:
        with parent_folder(path, root) as (parent, name):
            return read_at(parent, name)
    except OSError as exc:
        return none_if_absent(exc)


def read_bytes(path, root=None):
    """Content of a regular file, None when missing."""
    found = read_file(path, root)
    return found[0] if found else None


# =========================================================================== writing

def write_at(dir_fd, name, data, mode=FILE_MODE, mtime=None):
    """Write ``name`` in the folder ``dir_fd``: a new temp file (O_EXCL: never an existing
    file or a planted symlink), mode and mtime set on its descriptor, fsync, then renamed
    over ``name`` within the folder (a symlink there is replaced, never followed).

    ``mode`` None: a new file's usual mode (0666 less the umask). ``data``: bytes, or an
    iterable of bytes (a large file written as it is made, never whole in memory)."""
    tmp = ".%s.%s.provisioner-tmp" % (name[:100], os.urandom(6).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666 if mode is None else mode, dir_fd=dir_fd)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            for chunk in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_at(dir_fd, tmp)
        raise


def write_atomic(path, data, mode=FILE_MODE, root=None, mtime=None, create=True,
                 sync_folder=False):
    """Write ``path`` via an O_EXCL temp file + rename (``write_at``): a crash leaves the
    old or the new file, never a mix.

    The folders between the trusted ``root`` (default: the file's own folder) and the file
    are never followed; they and ``root`` are created (0755) when ``create``. With
    ``sync_folder`` the rename itself is made durable (fsync of the folder)."""
    with parent_folder(path, root, create) as (parent, name):
        write_at(parent, name, data, mode, mtime)
        if sync_folder:
            os.fsync(parent)


def unlink_at(dir_fd, name):
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def remove_file(path, root=None):
    """Remove ``path`` (folders below ``root`` never followed); False when absent."""
    try:
        with parent_folder(path, root) as (parent, name):
            return unlink_at(parent, name)
    except OSError as exc:
        return bool(none_if_absent(exc))


# =========================================================================== site files

MANIFEST_SCHEMA = "provisioner/site-manifest/v1"
OWNED_MARK = b"# provisioner-sha256: "


def manifest_files(data):
    """The path -> sha256 map of a site manifest (what we generated last time); ValueError
    when ``data`` is not one."""
    try:
        document = json.loads(data)
        files = document["files"]
        if document.get("schema") != MANIFEST_SCHEMA or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("unexpected schema")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(str(exc)) from None
    return dict(files)


def owned_file(body):
    """A file the toolkit owns on a host: its first line carries the sha256 of the rest,
    so the host agent can tell our file as written (intact), our file changed by hand
    (drift: restored by the next onboarding) and a file that is not ours (no mark)."""
    return OWNED_MARK + sha256_hex(body).encode() + b"\n" + body


def owned_state(data):
    """"intact" for a file we own as we wrote it, "drift" for one we own that was changed
    by hand since, None for anything else (no mark in its first line: not ours)."""
    if data is None or not data.startswith(OWNED_MARK):
        return None
    mark, _newline, body = data.partition(b"\n")
    return "intact" if mark[len(OWNED_MARK):] == sha256_hex(body).encode() else "drift"


def plan_site_files(new_hashes, deployed, current, manifest_path):
    """path -> (action, reason): what a deploy does to each file of one agency's site.

    ``new_hashes``: sha256 of what we generate now; ``deployed``: what we generated last
    time (the deployed manifest; None before the first deploy); ``current``: what is on
    the host. A file that differs from both our last and our new output was edited by
    the agency: kept. Files we no longer generate are removed only while unedited; files
    we never generated are not ours and not listed. The manifest is always refreshed.
    """
    deployed = deployed or {}
    plan = {}
    for path, new in new_hashes.items():
        generated, now = deployed.get(path), current.get(path)
        if now is None:
            plan[path] = ("create", "missing on host, generated again" if generated
                          else "new file")
        elif now == new:
            plan[path] = ("unchanged", "host copy is current")
        elif path == manifest_path or now == generated:
            plan[path] = ("update", "host copy is our previous output")
        elif generated is None:
            plan[path] = ("keep-edited", "exists on host but was not generated by us")
        else:
            plan[path] = ("keep-edited", "edited on host since the last deploy")
    for path, generated in deployed.items():
        if path not in new_hashes and current.get(path) is not None:
            plan[path] = (("remove", "no longer generated") if current[path] == generated
                          else ("keep-edited", "no longer generated, but edited on host"))
    return plan


# =========================================================================== /proc

PROC = "/proc"
ENDED_STATES = ("Z", "X")  # zombie, dead: the process has ended

ProcStat = collections.namedtuple("ProcStat", "state ppid start_time")
ProcStat.__doc__ = ("A process's /proc/PID/stat fields: state letter, parent pid, start "
                    "time (clock ticks after boot: with the pid, names one process).")


def pids():
    """The pids /proc lists now (some may end while the caller looks at them)."""
    return [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]


def proc_stat(pid):
    """The ``ProcStat`` of a process, None when it does not exist (or cannot be read)."""
    try:
        with open("%s/%d/stat" % (PROC, pid), "rb") as handle:
            text = handle.read()
        # the command name (field 2) is in parentheses and may hold anything, ")" too
        fields = text[text.rindex(b")") + 2:].split()
        return ProcStat(fields[0].decode(), int(fields[1]), int(fields[19]))
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid):
    """Whether a process with this pid runs on this host (a zombie counts as ended)."""
    if pid <= 0:
        return False
    found = proc_stat(pid)
    return found is not None and found.state not in ENDED_STATES


def process_argv(pid):
    """The arguments of a process (argv[0] first), None when it cannot be read. A process
    may rewrite them (nginx: "nginx: worker process"); a zombie's are empty."""
    try:
        with open("%s/%d/cmdline" % (PROC, pid), "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else []


def process_cmdline(pid):
    """The command line of a live process, arguments joined by spaces (zombies and
    missing processes: None)."""
    argv = process_argv(pid) if process_alive(pid) else None
    return (" ".join(argv).strip() or None) if argv else None


def process_exe(pid):
    """The program file a process runs ("(deleted)" stripped: the package was upgraded)."""
    try:
        exe = os.readlink("%s/%d/exe" % (PROC, pid))
    except OSError:
        return None
    return exe[:-len(" (deleted)")] if exe.endswith(" (deleted)") else exe


def children(pid):
    """The live processes whose parent is ``pid``."""
    found = []
    for child in pids():
        info = proc_stat(child)
        if info is not None and info.ppid == pid and info.state not in ENDED_STATES:
            found.append(child)
    return found


def mount_namespace(pid):
    """The mount namespace a process is in (``mnt:[4026531841]``), None when unknown."""
    try:
        return os.readlink("%s/%d/ns/mnt" % (PROC, pid))
    except OSError:
        return None
