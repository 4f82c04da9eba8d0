#!/usr/bin/python3
"""The host-side half of provisioner: everything that runs *on* a web host.

Two callers, one file, so the rules (where files live, how hashes are compared,
how nginx is tested and reloaded) have one definition:

* Ansible runs it as the module ``provisioner_vhosts`` (``main``): apply a bundle
  of agencies' site files and vhosts as one transaction per host.
* ``provisioner/hosts.py`` sends it over SSH to ``python3`` and runs ``serve_forever``:
  one request per line (facts, preflight, write/remove files, reload nginx; for
  offboarding and restore: snapshot a site, remove a vhost as a tested transaction,
  remove a folder, put a site back).

Only the standard library is used: the host needs nothing but python3 and nginx.

The vhost transaction ("never break a neighbour"): changed vhost files are swapped
in, ``nginx -t`` tests the whole config, and on failure the batch is bisected to find
the culprits; they are restored to their previous state (kept aside for inspection
under ``rejected_dir``) and only they are reported failed. The final set is tested
once more and nginx is reloaded once, and not at all when nothing changed.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time

DOCUMENTATION = r"""
---
module: provisioner_vhosts
short_description: Apply agencies' site files and nginx vhosts as one tested transaction
description:
  - Reads a bundle (tar.gz, base64, passed in the call itself so a host gets one transfer
    and no copy task) with C(bundle.json), C(sites/<slug>/...) and C(vhosts/<slug>.conf).
  - Writes site files, never overwriting a file the agency edited since the last deploy
    (compared with the deployed manifest); reports such files.
  - Swaps changed vhosts in, tests the whole config with C(nginx -t), isolates and rejects
    the vhosts that break it, and reloads nginx once (never restarts it).
options:
  bundle:
    description: The bundle, base64 (not logged).
    required: true
    type: str
  web_root:
    description: Every agency site folder must be inside it.
    required: true
    type: path
  sites_dir:
    description: Folder of the vhost files (included by the main config).
    required: true
    type: path
  rejected_dir:
    description: Where rejected vhost files are kept for inspection.
    required: true
    type: path
  nginx_binary:
    description: The nginx executable.
    required: true
    type: path
  nginx_main_config:
    description: The main nginx config file (passed to nginx -t and nginx -s reload).
    required: true
    type: path
author:
  - provisioner (DKISP Kabupaten Paser)
"""

RETURN = r"""
agencies:
  description: Per agency status (changed, ok, failed), reason, vhost action, rejected file
    and file lists (created, updated, removed, kept_edited, unchanged count).
  returned: always
  type: dict
reloaded:
  description: Whether nginx was reloaded (at most once).
  returned: always
  type: bool
nginx_tests:
  description: How many times nginx -t ran.
  returned: always
  type: int
"""

BUNDLE_SCHEMA = "provisioner/bundle/v1"
MANIFEST_SCHEMA = "provisioner/site-manifest/v1"
FILE_MODE = 0o644
DIR_MODE = 0o755
NGINX_TIMEOUT = 60
RELOAD_SETTLE = 10.0  # seconds the master gets to retire the workers of the old config
ACCEPTING_WORKER = b"nginx: worker process"  # a retiring worker's title adds "is shutting down"


# =========================================================================== files

def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    """sha256 of a regular file, None when it does not exist (or is not a regular file)."""
    try:
        with open(path, "rb", opener=_nofollow) as handle:
            if not _is_regular(handle.fileno()):
                return None
            digest = hashlib.sha256()
            for chunk in iter(lambda: handle.read(1 << 16), b""):
                digest.update(chunk)
            return digest.hexdigest()
    except OSError as exc:
        return _absent(exc)


def read_bytes(path):
    """Content of a regular file, None when missing."""
    try:
        with open(path, "rb", opener=_nofollow) as handle:
            return handle.read() if _is_regular(handle.fileno()) else None
    except OSError as exc:
        return _absent(exc)


def _absent(exc):
    """Missing, or a symlink (ELOOP): not a file we generated. Anything else is an error."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return None
    raise exc


def _nofollow(path, flags):
    return os.open(path, flags | os.O_NOFOLLOW)


def _is_regular(fd):
    return stat.S_ISREG(os.fstat(fd).st_mode)


def inside(path, folder):
    """True when ``path`` (after resolving symlinks) is ``folder`` or below it."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip("/") + "/")


def strictly_inside(path, folder):
    """True when ``path`` is below ``folder`` (not ``folder`` itself) and not a symlink."""
    return inside(path, folder) and not os.path.islink(path) and \
        os.path.realpath(path) != os.path.realpath(folder)


def safe_join(folder, rel):
    """``folder/rel`` for a relative path without '..'; ValueError otherwise."""
    norm = posixpath.normpath(rel)
    if not rel or rel.startswith("/") or norm.startswith("..") or "\x00" in rel \
            or norm != rel.rstrip("/"):
        raise ValueError("not a safe relative path: %r" % rel)
    return os.path.join(folder, norm)


def write_atomic(path, data, mode=FILE_MODE, root=None):
    """Write via a temp file + rename; parents are created and must stay inside ``root``."""
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
    if root is not None and not inside(parent, root):
        raise ValueError("%s leaves %s (symlinked folder?)" % (path, root))
    tmp = os.path.join(parent, ".%s.provisioner-tmp" % os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remove_file(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


# =========================================================================== site files

def parse_manifest(data):
    """The path -> sha256 map of a deployed manifest; None when absent or not one of ours."""
    if data is None:
        return None
    try:
        document = json.loads(data)
        files = document["files"]
        if document.get("schema") != MANIFEST_SCHEMA or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return dict(files)


def plan_site_files(new_hashes, deployed, current, manifest_path):
    """path -> (action, reason): the same rules as provisioner.site.plan_site_files.

    ``new_hashes``: what we generate now; ``deployed``: what we generated last time
    (None before the first deploy); ``current``: what is on the host. A file that
    differs from both our last and our new output was edited by the agency: kept.
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


def site_state(site_dir, paths, manifest_path):
    """(deployed manifest, current hashes) of one site: the facts a plan needs."""
    deployed = parse_manifest(read_bytes(safe_join(site_dir, manifest_path)))
    wanted = set(paths) | set(deployed or {})
    current = {}
    for rel in sorted(wanted):
        digest = file_sha256(safe_join(site_dir, rel))
        if digest is not None:
            current[rel] = digest
    return deployed, current


def apply_site_files(site_dir, files, manifest_path):
    """Write one agency's site files by the plan; the manifest is written last."""
    new_hashes = {rel: sha256_hex(data) for rel, data in files.items()}
    deployed, current = site_state(site_dir, files, manifest_path)
    plan = plan_site_files(new_hashes, deployed, current, manifest_path)
    report = {"created": [], "updated": [], "removed": [], "kept_edited": [], "unchanged": 0}
    ordered = sorted(plan, key=lambda rel: (rel == manifest_path, rel))
    for rel in ordered:
        action, _reason = plan[rel]
        target = safe_join(site_dir, rel)
        if action in ("create", "update"):
            write_atomic(target, files[rel], root=site_dir)
            report["created" if action == "create" else "updated"].append(rel)
        elif action == "remove":
            if inside(os.path.dirname(target), site_dir):
                remove_file(target)
            report["removed"].append(rel)
        elif action == "keep-edited":
            report["kept_edited"].append(rel)
        else:
            report["unchanged"] += 1
    return report


# =========================================================================== nginx

class Nginx:
    """``nginx -t`` and ``nginx -s reload`` for one main config (never a restart)."""

    def __init__(self, binary, main_config):
        self.binary = binary
        self.main_config = main_config
        self.tests = 0

    def _run(self, *args):
        try:
            done = subprocess.run([self.binary, *args, "-c", self.main_config],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=NGINX_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, "cannot run %s: %s" % (self.binary, exc)
        return done.returncode == 0, done.stdout.decode("utf-8", "replace").strip()

    def test(self):
        self.tests += 1
        ok, output = self._run("-t")
        return ok, _nginx_problem(output)

    def reload(self, settle=RELOAD_SETTLE):
        """Reload, and return only once no worker of the old config accepts connections.

        ``nginx -s reload`` returns as soon as the master has its signal. The master then
        reads the config, starts new workers, sleeps 100 ms and only then retires the old
        ones, so for a while both generations answer. A master that cannot apply the new
        config (a listen address that will not bind) keeps the old workers forever:
        that is reported as a failed reload, not taken as success."""
        master = self._master_pid()
        old_workers = accepting_workers(master) if master else set()
        ok, output = self._run("-s", "reload")
        if not ok or not old_workers:
            return ok, output
        deadline = time.monotonic() + settle
        while old_workers:
            if time.monotonic() > deadline:
                return False, (
                    "nginx kept the old configuration: its worker(s) %s still accept "
                    "connections %.0f s after the reload signal; see nginx's error log"
                    % (", ".join(map(str, sorted(old_workers))), settle))
            time.sleep(0.02)
            old_workers &= accepting_workers(master)
        return True, output

    def _master_pid(self):
        """The running master's pid, from the pid file the main config (or nginx) names."""
        path = self._pid_file()
        try:
            with open(path) as handle:
                return int(handle.read().strip())
        except (OSError, TypeError, ValueError):
            return None

    def _pid_file(self):
        try:
            with open(self.main_config) as handle:
                found = re.search(r"^\s*pid\s+([^;\s]+)\s*;", handle.read(), re.MULTILINE)
        except OSError:
            return None
        if found:
            return found.group(1)
        _ok, output = self._run("-V")
        built_in = re.search(r"--pid-path=(\S+)", output)
        return built_in.group(1) if built_in else None

    def version(self):
        ok, output = self._run("-v")
        return output.split("/", 1)[-1] if ok else None


def accepting_workers(master):
    """Pids of the master's children that still take new connections (from /proc)."""
    workers = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            if parent != master:
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                title = handle.read().split(b"\0", 1)[0].strip()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if title == ACCEPTING_WORKER:
            workers.add(int(entry))
    return workers


def _nginx_problem(output):
    """The lines that say what is wrong ([emerg]/[alert]/[crit]), else the whole output."""
    lines = [ln for ln in output.splitlines()
             if "[emerg]" in ln or "[alert]" in ln or "[crit]" in ln]
    return "\n".join(lines) or output


# =========================================================================== vhost transaction

class VhostTransaction:
    """Swap changed vhost files in, keep only what passes ``nginx -t``, reload once.

    ``vhosts`` maps slug -> (path, new content). Files of other agencies are never
    touched; a rejected file is restored to its previous content (or removed when it
    is new) and kept aside in ``rejected_dir``.
    """

    def __init__(self, nginx, vhosts, rejected_dir, now=None):
        self.nginx = nginx
        self.rejected_dir = rejected_dir
        self.now = now if now is not None else time.time()
        self.paths = {slug: path for slug, (path, _new) in vhosts.items()}
        self.new = {slug: new for slug, (_path, new) in vhosts.items()}
        self.old = {slug: read_bytes(path) for slug, path in self.paths.items()}
        self.changed = sorted(slug for slug in vhosts if self.old[slug] != self.new[slug])
        self.installed = set()

    def run(self):
        """slug -> {"vhost": created/updated/unchanged/rejected, "reason", "rejected_file"}."""
        results = {slug: {"vhost": "unchanged"} for slug in self.new if slug not in self.changed}
        outcome = {"agencies": results, "reloaded": False, "error": None}
        if not self.changed:
            return outcome
        accepted, rejected = self._select()
        if rejected is None:  # the config was broken before we touched it
            self._stage(set())
            for slug in self.changed:
                results[slug] = {"vhost": "rejected", "reason": accepted}
            return outcome
        if rejected:  # bisected: test the final set once more before the one reload
            self._stage(accepted)
            ok, problem = self.nginx.test()
            if not ok:  # only if the host changed under us: take nothing
                self._stage(set())
                rejected = dict.fromkeys(self.changed, "final config test failed: " + problem)
                accepted = set()
        for slug, problem in rejected.items():
            results[slug] = {"vhost": "rejected", "reason": problem,
                             "rejected_file": self._keep_rejected(slug)}
        for slug in accepted:
            results[slug] = {"vhost": "created" if self.old[slug] is None else "updated"}
        if accepted:
            ok, output = self.nginx.reload()
            outcome["reloaded"] = ok
            if not ok:
                outcome["error"] = "nginx reload failed: " + output
                for slug in accepted:
                    results[slug]["reason"] = outcome["error"]
        return outcome

    def _select(self):
        """(accepted slugs, {rejected slug: nginx's complaint}); rejected None: broken before."""
        everything = set(self.changed)
        self._stage(everything)
        ok, problem = self.nginx.test()
        if ok:
            return everything, {}
        self._stage(set())
        ok, baseline = self.nginx.test()
        if not ok:
            return ("nginx config is invalid before this change (nothing swapped in): "
                    + baseline), None
        accepted, rejected = set(), {}
        half = len(self.changed) // 2
        self._isolate(self.changed[:half], accepted, rejected)
        self._isolate(self.changed[half:], accepted, rejected)
        return accepted, rejected

    def _isolate(self, group, accepted, rejected):
        """Bisect: test accepted + group; split a failing group until the culprits remain."""
        if not group:
            return
        self._stage(accepted | set(group))
        ok, problem = self.nginx.test()
        if ok:
            accepted.update(group)
        elif len(group) == 1:
            rejected[group[0]] = problem
        else:
            half = len(group) // 2
            self._isolate(group[:half], accepted, rejected)
            self._isolate(group[half:], accepted, rejected)

    def _stage(self, wanted):
        """Make exactly ``wanted`` of the changed vhosts live on disk, the rest as before."""
        for slug in self.changed:
            if (slug in wanted) == (slug in self.installed):
                continue
            if slug in wanted:
                write_atomic(self.paths[slug], self.new[slug])
                self.installed.add(slug)
            else:
                if self.old[slug] is None:
                    remove_file(self.paths[slug])
                else:
                    write_atomic(self.paths[slug], self.old[slug])
                self.installed.discard(slug)

    def _keep_rejected(self, slug):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.now))
        path = os.path.join(self.rejected_dir, "%s.conf.%s" % (slug, stamp))
        write_atomic(path, self.new[slug], mode=0o600)
        return path


# =========================================================================== bundle

def read_bundle(data):
    """(spec, {member name: bytes}) of a bundle (tar.gz bytes); only regular files with
    safe names."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                raise ValueError("bundle member %r is not a regular file" % member.name)
            safe_join("/", member.name)
            members[member.name] = tar.extractfile(member).read()
    spec = json.loads(members.pop("bundle.json"))
    if spec.get("schema") != BUNDLE_SCHEMA:
        raise ValueError("not a provisioner bundle (schema %r)" % spec.get("schema"))
    return spec, members


def apply_bundle(bundle, web_root, sites_dir, rejected_dir, nginx, now=None):
    """Apply a host's bundle (bytes): site files, then the vhost transaction; per agency."""
    spec, members = read_bundle(bundle)
    manifest_path = spec["manifest_path"]
    agencies, vhosts = {}, {}
    for entry in spec["agencies"]:
        slug = entry["slug"]
        site_dir, vhost_path = entry["site_dir"], entry["vhost_path"]
        if not strictly_inside(site_dir, web_root):
            raise ValueError("%s: site folder %s is not inside %s" % (slug, site_dir, web_root))
        if os.path.dirname(vhost_path) != sites_dir.rstrip("/"):
            raise ValueError("%s: vhost %s is not in %s" % (slug, vhost_path, sites_dir))
        prefix = "sites/%s/" % slug
        files = {name[len(prefix):]: data for name, data in members.items()
                 if name.startswith(prefix)}
        try:
            agencies[slug] = {"files": apply_site_files(site_dir, files, manifest_path)}
        except (OSError, ValueError) as exc:
            agencies[slug] = {"files": None, "error": "site files: %s" % exc}
            continue
        vhosts[slug] = (vhost_path, members["vhosts/%s.conf" % slug])
    outcome = VhostTransaction(nginx, vhosts, rejected_dir, now).run()
    for slug, vhost in outcome["agencies"].items():
        agencies[slug].update(vhost)
    return {
        "agencies": {slug: _agency_status(result) for slug, result in agencies.items()},
        "reloaded": outcome["reloaded"],
        "nginx_tests": nginx.tests,
    }


def _agency_status(result):
    files = result.get("files") or {}
    failed = result.get("error") or result.get("vhost") == "rejected" or result.get("reason")
    changed = (result.get("vhost") in ("created", "updated")
               or any(files.get(k) for k in ("created", "updated", "removed")))
    status = "failed" if failed else "changed" if changed else "ok"
    return {
        "status": status,
        "reason": result.get("error") or result.get("reason"),
        "vhost": result.get("vhost", "not applied"),
        "rejected_file": result.get("rejected_file"),
        "files": files,
    }


# =========================================================================== offboarding and restore

def _entry(data, info, with_content):
    entry = {"sha256": sha256_hex(data), "mode": stat.S_IMODE(info.st_mode),
             "size": len(data), "mtime": info.st_mtime}
    if with_content:
        entry["data"] = base64.b64encode(data).decode()
    return entry


def _read_with_stat(path):
    """(content, stat) of a regular file without following a symlink; None when absent."""
    try:
        with open(path, "rb", opener=_nofollow) as handle:
            info = os.fstat(handle.fileno())
            return (handle.read(), info) if stat.S_ISREG(info.st_mode) else None
    except OSError as exc:
        return _absent(exc)


def site_snapshot(site_dir, web_root, vhost_path, with_content):
    """Every regular file of a site (hash, mode, size, mtime; content when asked), its
    folders' modes, what could not be taken (symlinks, devices), and its vhost."""
    if not strictly_inside(site_dir, web_root) and os.path.lexists(site_dir):
        raise ValueError("site folder %s is not inside %s" % (site_dir, web_root))
    files, dirs, skipped = {}, {}, []
    for parent, subdirs, names in os.walk(site_dir):  # never follows symlinked folders
        for name in sorted(subdirs) + sorted(names):
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, site_dir)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                dirs[rel] = stat.S_IMODE(info.st_mode)
                continue
            found = _read_with_stat(path) if stat.S_ISREG(info.st_mode) else None
            if found is None:
                skipped.append(rel)
            else:
                files[rel] = _entry(found[0], found[1], with_content)
    vhost = _read_with_stat(vhost_path)
    return {"exists": os.path.isdir(site_dir), "files": files, "dirs": dirs,
            "skipped": skipped,
            "vhost": _entry(vhost[0], vhost[1], with_content) if vhost else None}


def remove_vhost(nginx, vhost_path, sites_dir):
    """Remove one vhost as a transaction: ``nginx -t`` without it; when that fails the file
    is put back as it was and nothing is reloaded; otherwise one reload."""
    if os.path.dirname(vhost_path) != sites_dir.rstrip("/"):
        raise ValueError("vhost %s is not in %s" % (vhost_path, sites_dir))
    found = _read_with_stat(vhost_path)
    if found is None:
        return {"removed": False, "reloaded": False, "error": None}
    old, info = found
    remove_file(vhost_path)
    ok, problem = nginx.test()
    if not ok:
        write_atomic(vhost_path, old, mode=stat.S_IMODE(info.st_mode))
        return {"removed": False, "reloaded": False,
                "error": "nginx -t fails without this vhost (it was put back): " + problem}
    ok, output = nginx.reload()
    return {"removed": True, "reloaded": ok,
            "error": None if ok else "nginx reload failed: " + output}


def remove_tree(path, root):
    """Delete a folder and everything in it; it must be strictly inside ``root``."""
    if not os.path.lexists(path):
        return {"removed": False, "entries": 0}
    if not strictly_inside(path, root) or not os.path.isdir(path):
        raise ValueError("%s is not a folder inside %s" % (path, root))
    entries = sum(len(folders) + len(names) for _p, folders, names in os.walk(path))
    shutil.rmtree(path)
    return {"removed": True, "entries": entries}


def restore_site(site_dir, web_root, files, dirs):
    """Put archived files back (content, mode, mtime) and set folder modes.

    A file on the host whose content differs from the archive is never overwritten:
    then nothing is written at all and the differing paths are returned."""
    if not strictly_inside(site_dir, web_root) and os.path.lexists(site_dir):
        raise ValueError("site folder %s is not inside %s" % (site_dir, web_root))
    wanted = {}
    for item in files:
        data = base64.b64decode(item["data"])
        wanted[item["path"]] = (safe_join(site_dir, item["path"]), data, item)
    for path in [target for target, _d, _i in wanted.values()] + \
            [safe_join(site_dir, rel) for rel in dirs]:
        if not inside(path, site_dir):
            raise ValueError("%s leaves %s (symlinked folder?)" % (path, site_dir))
    conflicts = sorted(rel for rel, (target, data, _item) in wanted.items()
                       if file_sha256(target) not in (None, sha256_hex(data))
                       or (os.path.lexists(target) and not os.path.isfile(target)))
    if conflicts:
        return {"written": 0, "unchanged": 0, "conflicts": conflicts}
    os.makedirs(site_dir, mode=DIR_MODE, exist_ok=True)
    for rel in sorted(dirs):
        os.makedirs(safe_join(site_dir, rel), mode=DIR_MODE, exist_ok=True)
    written = 0
    for rel, (target, data, item) in sorted(wanted.items()):
        if file_sha256(target) != sha256_hex(data):
            write_atomic(target, data, mode=int(item["mode"]), root=site_dir)
            written += 1
        os.chmod(target, int(item["mode"]))
        os.utime(target, (item["mtime"], item["mtime"]))
    for rel in sorted(dirs, key=lambda r: r.count("/"), reverse=True):
        os.chmod(safe_join(site_dir, rel), int(dirs[rel]))
    return {"written": written, "unchanged": len(wanted) - written, "conflicts": []}


# =========================================================================== requests from hosts.py

def op_facts(request):
    """Vhost, deployed manifest, current file hashes and certificate of each agency."""
    manifest_path = request["manifest_path"]
    agencies = {}
    for entry in request["agencies"]:
        deployed, current = site_state(entry["site_dir"], entry.get("paths", ()), manifest_path)
        vhost = read_bytes(entry["vhost_path"])
        agencies[entry["slug"]] = {
            "vhost_sha256": sha256_hex(vhost) if vhost is not None else None,
            "deployed": deployed,
            "current": current,
        }
    certs = {}
    for path in request.get("certs", ()):
        chain = read_bytes(path)
        certs[path] = _first_pem(chain) if chain else None
    return {"agencies": agencies, "certs": certs}


def _first_pem(chain):
    """The leaf certificate of a chain (public data: never the key file)."""
    text = chain.decode("ascii", "replace")
    end = text.find("-----END CERTIFICATE-----")
    return text[:end + len("-----END CERTIFICATE-----")] + "\n" if end >= 0 else None


def op_preflight(request):
    """Who we run as, nginx's version and config test, free space, python version."""
    nginx = Nginx(request["nginx_binary"], request["nginx_main_config"])
    test_ok, test_output = nginx.test()
    free = {}
    for path in request["paths"]:
        probe = path
        while not os.path.exists(probe) and probe != "/":
            probe = os.path.dirname(probe)
        fs = os.statvfs(probe)
        free[path] = fs.f_bavail * fs.f_frsize
    return {
        "uid": os.geteuid(),
        "python": "%d.%d.%d" % sys.version_info[:3],
        "nginx_version": nginx.version(),
        "nginx_test_ok": test_ok,
        "nginx_test_output": test_output,
        "free_bytes": free,
    }


def op_write_files(request):
    """Write files (content base64) atomically with their mode; parents are created."""
    for item in request["files"]:
        write_atomic(item["path"], base64.b64decode(item["data"]), mode=int(item["mode"]),
                     root=item["root"])
    return {"written": len(request["files"])}


def op_remove_files(request):
    removed = [path for path in request["paths"] if remove_file(path)]
    return {"removed": removed}


def op_reload(request):
    """Test the whole config, then reload; never reload an untested config."""
    nginx = Nginx(request["nginx_binary"], request["nginx_main_config"])
    ok, problem = nginx.test()
    if not ok:
        return {"reloaded": False, "error": "nginx -t failed: " + problem}
    ok, output = nginx.reload()
    return {"reloaded": ok, "error": None if ok else "nginx reload failed: " + output}


def op_site_snapshot(request):
    return site_snapshot(request["site_dir"], request["web_root"], request["vhost_path"],
                         bool(request.get("content")))


def op_remove_vhost(request):
    nginx = Nginx(request["nginx_binary"], request["nginx_main_config"])
    return remove_vhost(nginx, request["vhost_path"], request["sites_dir"])


def op_remove_tree(request):
    return remove_tree(request["path"], request["root"])


def op_restore_site(request):
    return restore_site(request["site_dir"], request["web_root"], request["files"],
                        request["dirs"])


OPERATIONS = {
    "facts": op_facts,
    "preflight": op_preflight,
    "write_files": op_write_files,
    "remove_files": op_remove_files,
    "reload": op_reload,
    "site_snapshot": op_site_snapshot,
    "remove_vhost": op_remove_vhost,
    "remove_tree": op_remove_tree,
    "restore_site": op_restore_site,
}


def serve_forever(requests=None, answers=None):
    """Entry point for hosts.py: one JSON request per line in, one JSON answer per line out,
    until stdin closes (one agent per SSH connection: no session set-up per operation)."""
    requests = requests or sys.stdin.buffer
    answers = answers or sys.stdout.buffer
    for line in iter(requests.readline, b""):
        try:
            request = json.loads(line)
            answer = {"result": OPERATIONS[request["op"]](request)}
        except Exception as exc:  # reported to the controller, which raises HostError
            answer = {"error": "%s: %s" % (type(exc).__name__, exc)}
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()


# =========================================================================== Ansible

def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "bundle": {"type": "str", "required": True, "no_log": True},
            "web_root": {"type": "path", "required": True},
            "sites_dir": {"type": "path", "required": True},
            "rejected_dir": {"type": "path", "required": True},
            "nginx_binary": {"type": "path", "required": True},
            "nginx_main_config": {"type": "path", "required": True},
        },
        supports_check_mode=False,
    )
    p = module.params
    nginx = Nginx(p["nginx_binary"], p["nginx_main_config"])
    try:
        result = apply_bundle(base64.b64decode(p["bundle"]), p["web_root"], p["sites_dir"],
                              p["rejected_dir"], nginx)
    except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
        module.fail_json(msg="cannot apply the bundle: %s" % exc,
                         agencies={}, reloaded=False, nginx_tests=nginx.tests)
    failed = sorted(s for s, r in result["agencies"].items() if r["status"] == "failed")
    changed = any(r["status"] == "changed" for r in result["agencies"].values())
    if failed:
        module.fail_json(msg="failed: %s (the other agencies were applied)" % ", ".join(failed),
                         changed=changed, **result)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
