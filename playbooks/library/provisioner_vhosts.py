#!/usr/bin/python3
"""The host-side half of provisioner: everything that runs *on* a web host.

Two callers, one file, so the rules (where files live, how hashes are compared,
how nginx is tested and reloaded) have one definition:

* Ansible runs it as the module ``provisioner_vhosts`` (``main``): apply a bundle
  of agencies' site files and vhosts as one transaction per host.
* ``provisioner/hosts/agent.py`` sends it over SSH to ``python3`` and runs ``serve_forever``:
  one request per line (facts, preflight, write/remove files, reload nginx; for
  offboarding and restore: snapshot a site, remove a vhost as a tested transaction,
  remove a folder, put a site back).

Only the standard library is used: the host needs nothing but python3 and nginx. The
helpers the controller uses too (atomic writes, walks that never follow a symlink, path
safety, the site-file plan, /proc) are in ``provisioner/hosts/hostlib.py``, shipped with
this file: Ansible packs it as ``ansible.module_utils.hostlib`` (``ANSIBLE_MODULE_UTILS``,
set by provisioner/hosts/ansible.py), and agent.py sends its source first and makes it
importable as ``hostlib`` (so does ``agent.host_agent`` on the controller).

Why one file of this size (and not a package): it is one program shipped whole. Ansible
runs a module as one file plus the module_utils it imports, and the SSH agent is started
from its source on stdin; everything in it is the host's half of a controller operation
(the vhost transaction, site files, offboarding and restore, content access), reached
through ``OPERATIONS`` or ``main``. What is shared with the controller lives in hostlib.

The vhost transaction ("never break a neighbour"): changed vhost files are swapped
in, ``nginx -t`` tests the whole config, and on failure the batch is bisected to find
the culprits; they are restored to their previous state (kept aside for inspection
under ``rejected_dir``) and only they are reported failed. The final set is tested
once more and nginx is reloaded once, and not at all when nothing changed.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time

try:  # run by Ansible, which ships provisioner/hosts/hostlib.py with it as a module_utils
    from ansible.module_utils import hostlib
except ImportError:  # run by provisioner/hosts/agent.py, which loads hostlib first
    import hostlib

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
NGINX_TIMEOUT = 60
RELOAD_SETTLE = 10.0  # seconds the master gets to retire the workers of the old config
ACCEPTING_WORKER = "nginx: worker process"  # a retiring worker's title adds "is shutting down"


# =========================================================================== site files

def parse_manifest(data):
    """The path -> sha256 map of a deployed manifest; None when absent or not one of ours.

    A manifest of ours that names a path leaving the site (edited by hand: "../x") is a
    ValueError, so that this agency fails with that reason and no other."""
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
    for rel in files:
        try:
            if not hostlib.split_rel(rel):
                raise ValueError(rel)
        except ValueError:
            raise ValueError("the deployed manifest names a path outside the site: %r (edited "
                             "by hand? remove the manifest and deploy again)" % rel[:100]) \
                from None
    return dict(files)


def site_state_at(site_fd, paths, manifest_path):
    """(deployed manifest, current hashes) of the site open at ``site_fd``."""
    found = hostlib.read_below(site_fd, manifest_path)
    deployed = parse_manifest(found[0] if found else None)
    current = {}
    for rel in sorted(set(paths) | set(deployed or {})):
        found = hostlib.read_below(site_fd, rel)
        if found is not None:
            current[rel] = hostlib.sha256_hex(found[0])
    return deployed, current


def site_state(site_dir, web_root, paths, manifest_path):
    """(deployed manifest, current hashes) of one site: the facts a plan needs."""
    try:
        with hostlib.folder(web_root, hostlib.site_parts(site_dir, web_root)) as site_fd:
            return site_state_at(site_fd, paths, manifest_path)
    except OSError as exc:
        hostlib.none_if_absent(exc)
        return None, {}


def apply_site_files(site_fd, files, manifest_path):
    """Write one agency's site files by the plan; the manifest is written last."""
    new_hashes = {rel: hostlib.sha256_hex(data) for rel, data in files.items()}
    deployed, current = site_state_at(site_fd, files, manifest_path)
    plan = hostlib.plan_site_files(new_hashes, deployed, current, manifest_path)
    report = {"created": [], "updated": [], "removed": [], "kept_edited": [], "unchanged": 0}
    ordered = sorted(plan, key=lambda rel: (rel == manifest_path, rel))
    for rel in ordered:
        action, _reason = plan[rel]
        parts = hostlib.split_rel(rel)
        if action in ("create", "update"):
            with hostlib.below(site_fd, parts[:-1], create=True) as parent:
                hostlib.write_at(parent, parts[-1], files[rel])
            report["created" if action == "create" else "updated"].append(rel)
        elif action == "remove":
            with hostlib.below(site_fd, parts[:-1]) as parent:
                hostlib.unlink_at(parent, parts[-1])
            report["removed"].append(rel)
        elif action == "keep-edited":
            report["kept_edited"].append(rel)
        else:
            report["unchanged"] += 1
    return report

# =========================================================================== owned files

OWNED_MARK = b"# provisioner-sha256: "  # provisioner.site.render.owned_file writes it
MAX_DRIFT_SHOWN = 1 << 16  # bytes of a hand-edited vhost sent back for plan's diff


def owned_state(data):
    """"intact" for a file we own as we wrote it, "drift" for one we own that was changed
    by hand since, None for anything else (no mark in its first line: not ours)."""
    if data is None or not data.startswith(OWNED_MARK):
        return None
    mark, _newline, body = data.partition(b"\n")
    return "intact" if mark[len(OWNED_MARK):] == hostlib.sha256_hex(body).encode() else "drift"


def keep_aside(folder_path, prefix, data, now):
    """Keep a copy of a file for inspection (0600): ``folder_path/<prefix><UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    path = os.path.join(folder_path, prefix + stamp)
    hostlib.write_atomic(path, data, mode=0o600)
    return path


def drifted_vhosts(sites_dir):
    """Paths of the files in ``sites_dir`` we own that were changed by hand."""
    found = []
    try:
        with hostlib.folder(sites_dir) as dir_fd:
            for name in sorted(os.listdir(dir_fd)):
                content = hostlib.read_at(dir_fd, name)
                if content is not None and owned_state(content[0]) == "drift":
                    found.append(os.path.join(sites_dir, name))
    except OSError as exc:
        hostlib.none_if_absent(exc)
    return found


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
    for pid in hostlib.children(master):
        argv = hostlib.process_argv(pid)
        if argv and argv[0].strip() == ACCEPTING_WORKER:
            workers.add(pid)
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

    A vhost of ours changed by hand since we wrote it (drift, ``owned_state``) is moved
    aside into ``rejected_dir`` (``<slug>.conf.drift-<UTC time>``) before anything is
    tested, and counts as absent: the hand-edited file, broken or not, can no longer keep
    its own agency's repair from passing ``nginx -t``.
    """

    def __init__(self, nginx, vhosts, rejected_dir, now=None):
        self.nginx = nginx
        self.rejected_dir = rejected_dir
        self.now = now if now is not None else time.time()
        self.paths = {slug: path for slug, (path, _new) in vhosts.items()}
        self.new = {slug: new for slug, (_path, new) in vhosts.items()}
        self.old = {slug: hostlib.read_bytes(path) for slug, path in self.paths.items()}
        self.drifted = {slug: old for slug, old in self.old.items()
                        if owned_state(old) == "drift"}
        self.old.update(dict.fromkeys(self.drifted))
        self.changed = sorted(slug for slug in vhosts if self.old[slug] != self.new[slug])
        self.installed = set()

    def run(self):
        """slug -> {"vhost": created/updated/restored/unchanged/rejected, "reason",
        "rejected_file", "drift_file"}."""
        results = {slug: {"vhost": "unchanged"} for slug in self.new if slug not in self.changed}
        outcome = {"agencies": results, "reloaded": False, "error": None}
        if not self.changed:
            return outcome
        drift_files = self._set_drift_aside()
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
            results[slug] = {"vhost": "restored" if slug in self.drifted else
                             "created" if self.old[slug] is None else "updated"}
        for slug, path in drift_files.items():
            results[slug]["drift_file"] = path
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
                hostlib.write_atomic(self.paths[slug], self.new[slug])
                self.installed.add(slug)
            else:
                if self.old[slug] is None:
                    hostlib.remove_file(self.paths[slug])
                else:
                    hostlib.write_atomic(self.paths[slug], self.old[slug])
                self.installed.discard(slug)

    def _keep_rejected(self, slug):
        return keep_aside(self.rejected_dir, "%s.conf." % slug, self.new[slug], self.now)

    def _set_drift_aside(self):
        """Keep each drifted vhost's hand-edited copy, then take the file out of the config."""
        kept = {}
        for slug, edited in sorted(self.drifted.items()):
            kept[slug] = keep_aside(self.rejected_dir, "%s.conf.drift-" % slug, edited, self.now)
            hostlib.remove_file(self.paths[slug])
        return kept


# =========================================================================== bundle

def read_bundle(data):
    """(spec, {member name: bytes}) of a bundle (tar.gz bytes); only regular files with
    safe names."""
    members = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                raise ValueError("bundle member %r is not a regular file" % member.name)
            hostlib.split_rel(member.name)
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
        parts = hostlib.site_parts(site_dir, web_root)
        if os.path.dirname(vhost_path) != sites_dir.rstrip("/"):
            raise ValueError("%s: vhost %s is not in %s" % (slug, vhost_path, sites_dir))
        prefix = "sites/%s/" % slug
        files = {name[len(prefix):]: data for name, data in members.items()
                 if name.startswith(prefix)}
        try:
            with hostlib.folder(web_root, parts, create=True) as site_fd:
                agencies[slug] = {"files": apply_site_files(site_fd, files, manifest_path)}
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
    changed = (result.get("vhost") in ("created", "updated", "restored")
               or any(files.get(k) for k in ("created", "updated", "removed")))
    status = "failed" if failed else "changed" if changed else "ok"
    return {
        "status": status,
        "reason": result.get("error") or result.get("reason"),
        "vhost": result.get("vhost", "not applied"),
        "rejected_file": result.get("rejected_file"),
        "drift_file": result.get("drift_file"),
        "files": files,
    }


# =========================================================================== offboarding and restore

MAX_DEPTH = 64  # folders deeper in a site are listed as skipped, not archived


def _entry(data, info, with_content):
    entry = {"sha256": hostlib.sha256_hex(data), "mode": stat.S_IMODE(info.st_mode),
             "size": len(data), "mtime": info.st_mtime}
    if with_content:
        entry["data"] = base64.b64encode(data).decode()
    return entry


def _walk_site(dir_fd, prefix, with_content, files, dirs, skipped):
    """Take every regular file below ``dir_fd`` (folders opened with O_NOFOLLOW)."""
    for name in sorted(os.listdir(dir_fd)):
        rel = prefix + name
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed meanwhile
        if stat.S_ISDIR(info.st_mode) and rel.count("/") < MAX_DEPTH:
            try:
                child = os.open(name, hostlib.DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:  # swapped for a symlink meanwhile
                hostlib.none_if_absent(exc)
                skipped.append(rel)
                continue
            try:
                dirs[rel] = stat.S_IMODE(os.fstat(child).st_mode)
                _walk_site(child, rel + "/", with_content, files, dirs, skipped)
            finally:
                os.close(child)
            continue
        found = hostlib.read_at(dir_fd, name) if stat.S_ISREG(info.st_mode) else None
        if found is None:
            skipped.append(rel)
        else:
            files[rel] = _entry(found[0], found[1], with_content)


def _open_site(web_root, parts, create=False):
    """The site folder's descriptor; a site folder that is a symlink is a ValueError."""
    try:
        return hostlib.open_folder(web_root, parts, create)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ValueError("site folder %s is a symlink or not a folder"
                             % os.path.join(web_root, *parts)) from None
        raise


def site_snapshot(site_dir, web_root, vhost_path, with_content):
    """Every regular file of a site (hash, mode, size, mtime; content when asked), its
    folders' modes, what could not be taken (symlinks, devices), and its vhost."""
    parts = hostlib.site_parts(site_dir, web_root)
    files, dirs, skipped = {}, {}, []
    exists = True
    try:
        site_fd = _open_site(web_root, parts)
    except FileNotFoundError:
        exists = False
    else:
        try:
            _walk_site(site_fd, "", with_content, files, dirs, skipped)
        finally:
            os.close(site_fd)
    vhost = hostlib.read_file(vhost_path)
    return {"exists": exists, "files": files, "dirs": dirs, "skipped": skipped,
            "vhost": _entry(vhost[0], vhost[1], with_content) if vhost else None}


def remove_vhost(nginx, vhost_path, sites_dir):
    """Remove one vhost as a transaction: ``nginx -t`` without it; when that fails the file
    is put back as it was and nothing is reloaded; otherwise one reload."""
    if os.path.dirname(vhost_path) != sites_dir.rstrip("/"):
        raise ValueError("vhost %s is not in %s" % (vhost_path, sites_dir))
    found = hostlib.read_file(vhost_path)
    if found is None:
        return {"removed": False, "reloaded": False, "error": None}
    old, info = found
    hostlib.remove_file(vhost_path)
    ok, problem = nginx.test()
    if not ok:
        hostlib.write_atomic(vhost_path, old, mode=stat.S_IMODE(info.st_mode))
        return {"removed": False, "reloaded": False,
                "error": "nginx -t fails without this vhost (it was put back): " + problem}
    ok, output = nginx.reload()
    return {"removed": True, "reloaded": ok,
            "error": None if ok else "nginx reload failed: " + output}


def remove_tree(path, root):
    """Delete a folder and everything in it; it must be strictly inside ``root``
    (``shutil.rmtree`` works on descriptors and never follows a symlink)."""
    if not os.path.lexists(path):
        return {"removed": False, "entries": 0}
    if not hostlib.strictly_inside(path, root) or not os.path.isdir(path):
        raise ValueError("%s is not a folder inside %s" % (path, root))
    entries = sum(len(folders) + len(names) for _p, folders, names in os.walk(path))
    shutil.rmtree(path)
    return {"removed": True, "entries": entries}


def restore_site(site_dir, web_root, files, dirs):
    """Put archived files back (content, mtime) and set folder modes. Modes are masked
    (``file_mode``, ``dir_mode``): an archive never brings back a setuid, setgid or
    writable-by-others entry, whatever it recorded.

    A file on the host whose content differs from the archive is never overwritten:
    then nothing is written at all and the differing paths are returned."""
    parts = hostlib.site_parts(site_dir, web_root)
    wanted = {item["path"]: (hostlib.split_rel(item["path"]), base64.b64decode(item["data"]), item)
              for item in files}
    folders = {rel: hostlib.split_rel(rel) for rel in dirs}
    if not all(p for p, _d, _i in wanted.values()) or not all(folders.values()):
        raise ValueError("a restored path must be below the site folder")
    conflicts = _restore_conflicts(web_root, parts, wanted, folders)
    if conflicts:
        return {"written": 0, "unchanged": 0, "conflicts": conflicts}
    site_fd = _open_site(web_root, parts, create=True)
    try:
        for rel in sorted(folders):
            os.close(hostlib.open_below(site_fd, folders[rel], create=True))
        written = sum(_restore_file(site_fd, path, data, item)
                      for _rel, (path, data, item) in sorted(wanted.items()))
        for rel in sorted(dirs, key=lambda r: r.count("/"), reverse=True):
            with hostlib.below(site_fd, folders[rel]) as fd:
                os.fchmod(fd, hostlib.dir_mode(dirs[rel]))
    finally:
        os.close(site_fd)
    return {"written": written, "unchanged": len(wanted) - written, "conflicts": []}


def _restore_conflicts(web_root, parts, wanted, folders):
    """The archived paths whose host copy differs (other content, not a regular file);
    ValueError when a path goes through a symlink."""
    try:
        site_fd = _open_site(web_root, parts)
    except FileNotFoundError:
        return []
    conflicts = []
    try:
        for rel in folders:
            _probe(site_fd, folders[rel] + ["."], rel)
        for rel, (path, data, _item) in sorted(wanted.items()):
            if _probe(site_fd, path, rel) not in (None, data):
                conflicts.append(rel)
    finally:
        os.close(site_fd)
    return conflicts


def _probe(site_fd, path, rel):
    """Content of the file at ``path`` (None: absent, False: not a regular file)."""
    try:
        with hostlib.below(site_fd, path[:-1]) as parent:
            if path[-1] == ".":
                return None
            try:
                info = os.stat(path[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return None
            found = hostlib.read_at(parent, path[-1]) if stat.S_ISREG(info.st_mode) else None
            return found[0] if found else False
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ValueError("%s leaves the site (symlinked folder?)" % rel) from None
        raise


def _restore_file(site_fd, path, data, item):
    """Write one archived file back unless identical; its (masked) mode and mtime are set
    on its descriptor either way. True when written."""
    mode, mtime = hostlib.file_mode(item["mode"]), float(item["mtime"])
    with hostlib.below(site_fd, path[:-1], create=True) as parent:
        found = hostlib.open_file_at(parent, path[-1])
        if found is not None:
            fd, _info = found
            try:
                if hostlib.read_all(fd) == data:
                    os.fchmod(fd, mode)
                    os.utime(fd, (mtime, mtime))
                    return False
            finally:
                os.close(fd)
        hostlib.write_at(parent, path[-1], data, mode, mtime)
        return True


# =========================================================================== requests from hosts.py

def op_facts(request):
    """Vhost, deployed manifest, current file hashes and certificate of each agency; an
    agency whose facts cannot be read (a manifest edited by hand) gets its ``error``."""
    manifest_path = request["manifest_path"]
    agencies = {}
    for entry in request["agencies"]:
        try:
            deployed, current = site_state(entry["site_dir"], request["web_root"],
                                           entry.get("paths", ()), manifest_path)
        except (OSError, ValueError) as exc:
            agencies[entry["slug"]] = {"error": "%s: %s" % (entry["site_dir"], exc)}
            continue
        vhost = hostlib.read_bytes(entry["vhost_path"])
        agencies[entry["slug"]] = {
            "vhost_sha256": hostlib.sha256_hex(vhost) if vhost is not None else None,
            "vhost_drift": vhost[:MAX_DRIFT_SHOWN].decode("utf-8", "replace")
            if owned_state(vhost) == "drift" else None,
            "deployed": deployed,
            "current": current,
        }
    certs = {}
    for path in request.get("certs", ()):
        chain = hostlib.read_bytes(path)
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
        "nginx_test_file": None if test_ok else blamed_file(test_output),
        "drifted": drifted_vhosts(request["sites_dir"]) if "sites_dir" in request else [],
        "free_bytes": free,
    }


def blamed_file(problem):
    """The config file nginx -t names in its complaint ("... in /path/x.conf:12")."""
    found = re.search(r" in (/\S+?):\d+\s*$", problem, re.MULTILINE)
    return found.group(1) if found else None


def op_write_files(request):
    """Write files (content base64) atomically with their mode; parents are created."""
    for item in request["files"]:
        hostlib.write_atomic(item["path"], base64.b64decode(item["data"]), mode=int(item["mode"]),
                     root=item["root"])
    return {"written": len(request["files"])}


def op_remove_files(request):
    removed = [path for path in request["paths"] if hostlib.remove_file(path)]
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


# =========================================================================== doctor

MAX_MAIN_CONFIG = 1 << 20  # bytes of the main nginx config sent back to 'provisioner doctor'


def op_doctor_facts(request):
    """For 'provisioner doctor' (reads only): the main nginx config's text (None when it
    is missing or a symlink) and this host's clock."""
    data = hostlib.read_bytes(request["nginx_main_config"])
    return {"main_config": None if data is None
            else data[:MAX_MAIN_CONFIG].decode("utf-8", "replace"),
            "time": time.time()}


OPERATIONS["doctor_facts"] = op_doctor_facts



# =========================================================================== content access

# An agency's SFTP account (issue 17): a system user in SFTP_GROUP with no shell, chrooted
# by sshd to its site folder. The site folder stays root's (OpenSSH refuses a chroot the
# user could write); everything inside it becomes the account's, except the manifest and
# files with other hard links. Only the validated account name reaches a command line.

SFTP_GROUP = "provisioner-sftp"
NOLOGIN = "/usr/sbin/nologin"
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SSHD_TIMEOUT = 30
USER_TOOL_TIMEOUT = 60


def _tool(argv, timeout=USER_TOOL_TIMEOUT):
    """A fixed command (no shell); (ok, output)."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    return done.returncode == 0, output


def _checked_account(name):
    if not isinstance(name, str) or not ACCOUNT_RE.match(name):
        raise ValueError("invalid account name %r" % (name,))
    return name


def _sftp_user(name):
    """The account's passwd entry when it exists and is ours; ValueError when the name
    belongs to some other user of the host (never taken over)."""
    import grp
    import pwd
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return None
    try:
        gid = grp.getgrnam(SFTP_GROUP).gr_gid
    except KeyError:
        gid = None
    if user.pw_gid != gid or user.pw_shell != NOLOGIN:
        raise ValueError("user %s exists on the host and is not a provisioner SFTP "
                         "account" % name)
    return user


def ensure_sftp_account(name):
    """The account (created when missing): True when it was created."""
    import grp
    _checked_account(name)
    if _sftp_user(name) is not None:
        return False
    try:
        grp.getgrnam(SFTP_GROUP)
    except KeyError:
        ok, output = _tool(["groupadd", "--system", SFTP_GROUP])
        if not ok:
            raise OSError("groupadd %s failed: %s" % (SFTP_GROUP, output))
    # "*": no password can ever match, and sshd still lets a key in (a "!" would not).
    ok, output = _tool(["useradd", "--system", "--gid", SFTP_GROUP, "--home-dir", "/",
                        "--no-create-home", "--shell", NOLOGIN, "--password", "*", name])
    if not ok:
        raise OSError("useradd %s failed: %s" % (name, output))
    return True


def remove_sftp_account(name):
    """userdel (no files removed: the site is root's again first); False when absent."""
    if _sftp_user(_checked_account(name)) is None:
        return False
    ok, output = _tool(["userdel", name])
    if not ok:
        raise OSError("userdel %s failed: %s" % (name, output))
    return True


def hand_over_site(site_fd, uid, gid, manifest_path, top=True):
    """Give what is inside a site folder to ``uid``; the folder itself stays root's 0755
    (the chroot). Never follows a symlink; skips files with more than one link."""
    if top:
        os.fchown(site_fd, 0, 0)
        os.fchmod(site_fd, hostlib.DIR_MODE)
    for entry in os.scandir(site_fd):
        if top and entry.name == manifest_path:
            continue
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            with hostlib.below(site_fd, [entry.name]) as child:
                os.fchown(child, uid, gid)
                hand_over_site(child, uid, gid, manifest_path, top=False)
        elif stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            os.chown(entry.name, uid, gid, dir_fd=site_fd, follow_symlinks=False)


def _ensure_upload_folder(site_fd, name, uid, gid):
    with hostlib.below(site_fd, [name], create=True) as upload:
        os.fchown(upload, uid, gid)


class Sshd(object):
    """``sshd -t`` on the main config, reload by SIGHUP to the pid in its pid file (what
    systemd's ``reload ssh`` does after its own ``sshd -t``)."""

    def __init__(self, binary, main_config, pid_file):
        self.binary, self.main_config, self.pid_file = binary, main_config, pid_file

    def test(self):
        return _tool([self.binary, "-t", "-f", self.main_config], SSHD_TIMEOUT)

    def reload(self):
        import signal
        data = hostlib.read_bytes(self.pid_file)
        try:
            os.kill(int(data.decode().strip()), signal.SIGHUP)
        except (AttributeError, ValueError, OSError) as exc:
            return False, "cannot signal sshd (pid file %s): %s" % (self.pid_file, exc)
        return True, ""


def apply_drop_in(sshd, path, data):
    """Swap the drop-in in, test, reload; the previous one back when the test fails.
    (changed, error)."""
    previous = hostlib.read_bytes(path)
    if previous == data:
        return False, None
    hostlib.write_atomic(path, data, hostlib.FILE_MODE)
    ok, output = sshd.test()
    if not ok:
        if previous is None:
            hostlib.remove_file(path)
        else:
            hostlib.write_atomic(path, previous, hostlib.FILE_MODE)
        return False, "sshd -t failed (drop-in restored): " + output[-2000:]
    ok, output = sshd.reload()
    return True, None if ok else output


def _give_site(item, web_root, manifest_path, upload_folder):
    import pwd
    user = pwd.getpwnam(item["name"])
    site_fd = _open_site(web_root, hostlib.site_parts(item["site_dir"], web_root))
    try:
        hand_over_site(site_fd, user.pw_uid, user.pw_gid, manifest_path)
        _ensure_upload_folder(site_fd, upload_folder, user.pw_uid, user.pw_gid)
    finally:
        os.close(site_fd)


def _take_back_site(item, web_root, manifest_path):
    try:
        site_fd = _open_site(web_root, hostlib.site_parts(item["site_dir"], web_root))
    except FileNotFoundError:
        return  # offboarded: the folder is gone already
    try:
        hand_over_site(site_fd, 0, 0, manifest_path)
    finally:
        os.close(site_fd)


def op_content_access(request):
    """Converge the host's SFTP accounts: create and hand over (``accounts``), keys files,
    the sshd drop-in (tested, restored on failure), then take back and delete
    (``remove``). Keys files are written before the drop-in names them and removed
    before the account goes, so a removed key is refused from the next login on."""
    web_root, keys_dir = request["web_root"], request["keys_dir"]
    manifest_path = request["manifest_path"]
    created, keys_changed, removed = [], [], []
    for item in request["accounts"]:
        name = _checked_account(item["name"])
        if ensure_sftp_account(name):
            created.append(name)
        _give_site(item, web_root, manifest_path, request["upload_folder"])
        keys = item["keys"].encode()
        if hostlib.read_bytes(os.path.join(keys_dir, name), keys_dir) != keys:
            hostlib.write_atomic(os.path.join(keys_dir, name), keys, hostlib.FILE_MODE,
                                 root=keys_dir)
            keys_changed.append(name)
    for item in request["remove"]:
        if hostlib.remove_file(os.path.join(keys_dir, _checked_account(item["name"])), keys_dir):
            keys_changed.append(item["name"])
    sshd = Sshd(request["sshd_binary"], request["sshd_config"], request["sshd_pid_file"])
    drop_in_changed, error = apply_drop_in(sshd, request["drop_in"],
                                           request["drop_in_text"].encode())
    if error is None:
        for item in request["remove"]:
            _take_back_site(item, web_root, manifest_path)
            if remove_sftp_account(item["name"]):
                removed.append(item["name"])
    return {"created": created, "keys_changed": keys_changed, "removed": removed,
            "drop_in_changed": drop_in_changed, "error": error}


def op_content_access_facts(request):
    """What exists of the given accounts: {name: {"exists", "keys"}} (keys: the keys
    file's text, None when absent)."""
    keys_dir = request["keys_dir"]
    facts = {}
    for name in request["names"]:
        keys = hostlib.read_bytes(os.path.join(keys_dir, _checked_account(name)), keys_dir)
        facts[name] = {"exists": _sftp_user(name) is not None,
                       "keys": None if keys is None else keys.decode("utf-8", "replace")}
    drop_in = hostlib.read_bytes(request["drop_in"])
    return {"accounts": facts,
            "drop_in": None if drop_in is None else drop_in.decode("utf-8", "replace")}


OPERATIONS["content_access"] = op_content_access
OPERATIONS["content_access_facts"] = op_content_access_facts


if __name__ == "__main__":
    main()
