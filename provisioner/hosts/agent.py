"""Web hosts directly over SSH (paramiko): preflight, facts for ``plan``, small file writes.

One ``HostClient`` per host connection. Host keys are checked against the
inventory's ``known_hosts_file`` only, with paramiko's ``RejectPolicy``: an unknown
or changed key is an error, never accepted. Every paramiko or socket error becomes
an ``errors.HostError`` naming the host.

Each operation is ONE round trip: on the first call the host-side half of
provisioner (``playbooks/library/provisioner_vhosts.py``, also the Ansible module,
standard library only) is sent to the host's python3 on stdin and stays running
for the connection; every operation is then one JSON line each way, so no SSH
session is set up per operation. Payloads (including certificate keys) travel on
stdin inside the SSH channel: never on a command line, never in a log. Files are written atomically
with their final mode set before any byte lands, so a key is 0600 from the start;
that is why keys go this way and not through Ansible (no extravars, no runner
artifacts to scrub).
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import shlex
import socket
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import paramiko

from ..errors import HostError
from ..paths import PLAYBOOK_DIR
from ..registry.models import Agency, Host, Settings
from ..site import render as site
from . import hostlib

HOST_AGENT = PLAYBOOK_DIR / "library" / "provisioner_vhosts.py"
HOST_LIB = Path(hostlib.__file__)
REMOTE_PYTHON = "/usr/bin/python3"
# Reads two sources (each length-prefixed) from stdin: hostlib, made importable as
# ``hostlib`` (the agent's import when Ansible is not there to ship it), then the agent,
# run under a name that is not __main__ (so the Ansible entry point stays idle); then
# serves request lines.
_BOOTSTRAP = ("import sys, types; "
              "read = lambda: sys.stdin.buffer.read(int(sys.stdin.buffer.readline())).decode(); "
              "lib = sys.modules['hostlib'] = types.ModuleType('hostlib'); "
              "exec(read(), lib.__dict__); "
              "ns = {'__name__': 'provisioner_agent'}; "
              "exec(read(), ns); ns['serve_forever']()")
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 120.0
MIN_FREE_BYTES = 100 * 1024 * 1024
MIN_PYTHON = (3, 8)


@functools.cache
def host_agent() -> types.ModuleType:
    """The host-side half imported on the controller, for hosts that are this machine
    (the lab reloads its nginx with the same code the product runs on a web host)."""
    sys.modules.setdefault("hostlib", hostlib)  # what the agent imports, as on a host
    spec = importlib.util.spec_from_file_location("provisioner_agent", HOST_AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class RemoteFile:
    """A file to write on a host; ``root`` is the folder it must stay inside."""

    path: Path
    data: bytes = field(repr=False)
    mode: int
    root: Path


@dataclass(frozen=True)
class Preflight:
    host: str
    uid: int
    python: str
    nginx_version: str | None
    nginx_test_ok: bool
    nginx_test_output: str
    free_bytes: Mapping[str, int]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def preflight_problems(raw: Mapping[str, Any], nginx_binary: str,
                       min_free_bytes: int = MIN_FREE_BYTES,
                       repairable: Iterable[str] = ()) -> list[str]:
    """What stops a deploy on this host, from the agent's raw answer (pure).

    A config that fails ``nginx -t`` in a vhost of ours changed by hand (drift) stops
    nothing when that vhost is in ``repairable`` (this run restores it)."""
    problems = []
    if raw["uid"] != 0:
        problems.append(f"commands run as uid {raw['uid']}, not root (sudo needed)")
    if tuple(int(p) for p in raw["python"].split(".")[:2]) < MIN_PYTHON:
        problems.append(f"python {raw['python']} is too old (need "
                        f"{'.'.join(map(str, MIN_PYTHON))}+)")
    if not raw["nginx_version"]:
        problems.append(f"nginx not found or not runnable at {nginx_binary}")
    elif not raw["nginx_test_ok"]:
        problems += _config_problem(raw, set(repairable))
    for path, free in sorted(raw["free_bytes"].items()):
        if free < min_free_bytes:
            problems.append(f"only {free // 2**20} MiB free for {path} "
                            f"(need {min_free_bytes // 2**20} MiB)")
    return problems


def _config_problem(raw: Mapping[str, Any], repairable: set[str]) -> list[str]:
    problem = f"nginx -t fails on the current config: {raw['nginx_test_output']}"
    blamed = raw.get("nginx_test_file")
    if blamed not in raw.get("drifted", ()):
        return [problem]
    if blamed in repairable:
        return []
    return [f"{problem} ({blamed} was changed by hand since provisioner wrote it: "
            f"'provisioner onboard {Path(blamed).stem}' restores it)"]


@dataclass(frozen=True)
class SiteFacts:
    """What is on the host for one agency: vhost, deployed manifest, current file hashes."""

    slug: str
    vhost_sha256: str | None
    deployed: Mapping[str, str] | None  # path -> sha256 we generated last time
    current: Mapping[str, str]  # path -> sha256 on the host now
    error: str | None = None  # why this agency's files cannot be read (its own problem)
    vhost_drift: str | None = None  # the vhost as edited by hand, when ours was changed

    def plan(self, rendered: Mapping[str, bytes]) -> list[site.FileChange]:
        """What a deploy of ``rendered`` would do to the files (site.py's rules)."""
        return site.plan_site_files(dict(rendered), dict(self.deployed) if self.deployed
                                    is not None else None, dict(self.current))

    @property
    def edited(self) -> list[str]:
        """Files the agency changed since our last deploy."""
        deployed = self.deployed or {}
        return sorted(p for p, digest in self.current.items()
                      if p in deployed and digest != deployed[p] and p != site.MANIFEST_PATH)


@dataclass(frozen=True)
class HostFacts:
    host: str
    sites: Mapping[str, SiteFacts]
    certs: Mapping[Path, str | None]  # fullchain path -> leaf certificate PEM (None: absent)


@dataclass(frozen=True)
class SiteFile:
    """One file of a site (or its vhost) as the host has it; ``data`` only when fetched."""

    sha256: str
    mode: int
    size: int
    mtime: float
    data: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_answer(cls, raw: Mapping[str, Any]) -> SiteFile:
        data = base64.b64decode(raw["data"]) if "data" in raw else None
        return cls(raw["sha256"], raw["mode"], raw["size"], raw["mtime"], data)


@dataclass(frozen=True)
class SiteSnapshot:
    """Everything of one agency's site on its host: files (by relative path), folder
    modes, entries that are not regular files (``skipped``: symlinks, devices), the vhost."""

    exists: bool
    files: Mapping[str, SiteFile]
    dirs: Mapping[str, int]
    skipped: tuple[str, ...]
    vhost: SiteFile | None

    @property
    def empty(self) -> bool:
        return not self.files and not self.dirs and not self.skipped and self.vhost is None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())


class HostClient:
    """One SSH connection to one web host (use as a context manager)."""

    def __init__(self, host: Host, known_hosts_file: Path, *,
                 timeout: float = CONNECT_TIMEOUT):
        self.host = host
        self.known_hosts_file = Path(known_hosts_file)
        self.timeout = timeout
        self._client: paramiko.SSHClient | None = None
        self._agent: paramiko.Channel | None = None
        self._answers: Any = None
        self._lock = threading.Lock()  # one request/answer pair at a time on the agent

    def __enter__(self) -> HostClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts_file))
        except OSError as exc:
            raise HostError(self.host.name, f"cannot read known_hosts {self.known_hosts_file}: "
                                            f"{exc.strerror or exc}",
                            hint="the inventory's known_hosts_file must list every host's key") \
                from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            sock = socket.create_connection((self.host.ssh_address, self.host.ssh_port),
                                            timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests
            client.connect(self.host.ssh_address, port=self.host.ssh_port,
                           username=self.host.ssh_user, key_filename=str(self.host.ssh_key_file),
                           look_for_keys=False, allow_agent=False, timeout=self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout, sock=sock)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostError(self.host.name, f"host key of {self._where} CHANGED: expected "
                                            f"{exc.expected_key.get_base64()[:16]}..., got "
                                            f"{exc.key.get_base64()[:16]}...",
                            hint=f"refusing to connect; if the host was reinstalled, verify the "
                                 f"new key out of band and update {self.known_hosts_file}") \
                from None
        except (paramiko.SSHException, OSError) as exc:
            client.close()
            raise self._error("cannot connect", exc) from None
        self._client = client

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()  # the agent exits at the end of its stdin
            self._agent = None
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def _where(self) -> str:
        return f"{self.host.ssh_user}@{self.host.ssh_address}:{self.host.ssh_port}"

    def _error(self, what: str, exc: BaseException) -> HostError:
        text = str(exc) or type(exc).__name__
        hint = None
        if "not found in known_hosts" in text:
            text = f"host key of {self._where} is unknown (not in {self.known_hosts_file})"
            hint = "refusing to trust it blindly; add the verified key to known_hosts_file"
        elif isinstance(exc, paramiko.AuthenticationException):
            hint = f"check ansible_user and ansible_ssh_private_key_file ({self.host.ssh_key_file})"
        return HostError(self.host.name, f"{what} ({self._where}): {text}", hint=hint)

    # ------------------------------------------------------------------ one round trip

    def _start_agent(self) -> None:
        if self._client is None:
            self.connect()
        command = f"{REMOTE_PYTHON} -c {shlex.quote(_BOOTSTRAP)}"
        if self.host.ssh_user != "root":
            command = f"sudo -n {command}"
        sources = (HOST_LIB.read_bytes(), HOST_AGENT.read_bytes())
        try:
            channel = self._client.get_transport().open_session(timeout=self.timeout)
            channel.settimeout(COMMAND_TIMEOUT)
            channel.exec_command(command)
            channel.sendall(b"".join(b"%d\n" % len(source) + source for source in sources))
        except (paramiko.SSHException, OSError) as exc:
            raise self._error("cannot start the host agent", exc) from None
        self._agent, self._answers = channel, channel.makefile("rb")

    def call(self, op: str, **params: Any) -> dict[str, Any]:
        """Run one operation on the host agent: one JSON line out, one back."""
        with self._lock:
            if self._agent is None:
                self._start_agent()
            try:
                self._agent.sendall(json.dumps({"op": op, **params}).encode() + b"\n")
                line = self._answers.readline()
            except (paramiko.SSHException, OSError) as exc:
                self._agent.close()
                self._agent = None
                raise self._error(f"'{op}' failed", exc) from None
            if not line:
                raise self._agent_died(op)
        answer = json.loads(line)
        if "error" in answer:
            raise HostError(self.host.name, f"'{op}' failed: {answer['error']}")
        return answer["result"]

    def _agent_died(self, op: str) -> HostError:
        channel, self._agent = self._agent, None
        status = channel.recv_exit_status()
        lines = channel.makefile_stderr("rb").read().decode("utf-8", "replace").strip()
        last = lines.splitlines()[-1] if lines else "no message"
        return HostError(self.host.name, f"'{op}' failed: the host agent exited ({status}): "
                                         f"{last}",
                         hint="sudo must work without a password (sudo -n)"
                         if "sudo" in lines else f"is {REMOTE_PYTHON} installed on the host?")

    # ------------------------------------------------------------------ operations

    def preflight(self, min_free_bytes: int = MIN_FREE_BYTES,
                  repairable: Iterable[Path] = ()) -> Preflight:
        """Reachable (we are connected), root, python, nginx present and its config valid
        (or broken only by drifted vhosts in ``repairable``, which this run restores),
        free space where sites and certificates go."""
        h = self.host
        raw = self.call("preflight", nginx_binary=h.nginx_binary,
                        nginx_main_config=str(h.nginx_main_config),
                        sites_dir=str(h.nginx_sites_dir),
                        paths=[str(h.web_root), str(h.tls_dir), str(h.nginx_sites_dir)])
        return Preflight(host=h.name, uid=raw["uid"], python=raw["python"],
                         nginx_version=raw["nginx_version"], nginx_test_ok=raw["nginx_test_ok"],
                         nginx_test_output=raw["nginx_test_output"],
                         free_bytes=raw["free_bytes"],
                         problems=tuple(preflight_problems(raw, h.nginx_binary, min_free_bytes,
                                                           map(str, repairable))))

    def doctor_facts(self) -> tuple[str | None, float]:
        """(the main nginx config's text, None when missing; the host's clock as a Unix
        time) for 'provisioner doctor', in one round trip."""
        raw = self.call("doctor_facts", nginx_main_config=str(self.host.nginx_main_config))
        return raw["main_config"], float(raw["time"])

    def facts(self, agencies: Sequence[Agency], settings: Settings,
              rendered_paths: Mapping[str, Iterable[str]] | None = None) -> HostFacts:
        """Everything ``plan`` needs from this host, for its agencies, in one round trip.

        ``rendered_paths`` (slug -> site paths we would write) adds files to hash
        besides those the deployed manifest lists.
        """
        h = self.host
        rendered_paths = rendered_paths or {}
        entries = [{"slug": a.slug, "site_dir": str(site.site_dir(a, h)),
                    "vhost_path": str(site.vhost_path(a, h)),
                    "paths": sorted(rendered_paths.get(a.slug, ()))} for a in agencies]
        cert_files = sorted({str(site.cert_paths(a, h, settings).fullchain) for a in agencies})
        raw = self.call("facts", manifest_path=site.MANIFEST_PATH, web_root=str(h.web_root),
                        agencies=entries, certs=cert_files)
        sites = {slug: SiteFacts(slug, f.get("vhost_sha256"), f.get("deployed"),
                                 f.get("current", {}), f.get("error"), f.get("vhost_drift"))
                 for slug, f in raw["agencies"].items()}
        certs = {Path(path): pem for path, pem in raw["certs"].items()}
        return HostFacts(host=h.name, sites=sites, certs=certs)

    def certificates(self, fullchains: Iterable[Path]) -> dict[Path, str | None]:
        """The leaf certificate (PEM) at each path, None when absent (one round trip)."""
        raw = self.call("facts", manifest_path=site.MANIFEST_PATH, web_root=str(self.host.web_root),
                        agencies=[], certs=sorted({str(p) for p in fullchains}))
        return {Path(path): pem for path, pem in raw["certs"].items()}

    def write_files(self, files: Sequence[RemoteFile]) -> None:
        """Write files atomically, each with its mode from the first byte (one round trip)."""
        if files:
            self.call("write_files", files=[
                {"path": str(f.path), "data": base64.b64encode(f.data).decode(), "mode": f.mode,
                 "root": str(f.root)} for f in files])

    def remove_files(self, paths: Iterable[Path]) -> list[str]:
        paths = [str(p) for p in paths]
        return self.call("remove_files", paths=paths)["removed"] if paths else []

    def reload_nginx(self) -> None:
        """``nginx -t`` on the whole config, then reload (never restart); HostError if not."""
        h = self.host
        answer = self.call("reload", nginx_binary=h.nginx_binary,
                           nginx_main_config=str(h.nginx_main_config))
        if not answer["reloaded"]:
            raise HostError(h.name, answer["error"])

    def content_access(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Converge the host's agency SFTP accounts (``access.converge_request``) in one
        round trip; HostError when sshd refuses the drop-in (the previous one is back)."""
        answer = self.call("content_access", **request)
        if answer["error"]:
            raise HostError(self.host.name, answer["error"])
        return answer

    # ------------------------------------------------------------------ offboarding, restore

    def site_snapshot(self, agency: Agency, *, content: bool) -> SiteSnapshot:
        """The agency's site folder and vhost (with every file's bytes when ``content``),
        in one round trip."""
        h = self.host
        raw = self.call("site_snapshot", site_dir=str(site.site_dir(agency, h)),
                        web_root=str(h.web_root), vhost_path=str(site.vhost_path(agency, h)),
                        content=content)
        return SiteSnapshot(
            exists=raw["exists"],
            files={rel: SiteFile.from_answer(f) for rel, f in raw["files"].items()},
            dirs=dict(raw["dirs"]), skipped=tuple(raw["skipped"]),
            vhost=SiteFile.from_answer(raw["vhost"]) if raw["vhost"] else None)

    def remove_vhost(self, agency: Agency) -> bool:
        """Remove the agency's vhost: ``nginx -t`` without it (the file is put back when
        that fails: HostError), then one reload. False when there was none."""
        h = self.host
        answer = self.call("remove_vhost", vhost_path=str(site.vhost_path(agency, h)),
                           sites_dir=str(h.nginx_sites_dir), nginx_binary=h.nginx_binary,
                           nginx_main_config=str(h.nginx_main_config))
        if answer["error"]:
            raise HostError(h.name, answer["error"])
        return answer["removed"]

    def remove_tree(self, path: Path, root: Path) -> int | None:
        """Delete a folder strictly inside ``root``; entries removed, None when absent."""
        answer = self.call("remove_tree", path=str(path), root=str(root))
        return answer["entries"] if answer["removed"] else None

    def restore_site(self, agency: Agency, files: Mapping[str, SiteFile],
                     dirs: Mapping[str, int]) -> tuple[int, int]:
        """Write files back byte for byte with their modes and mtimes (one round trip):
        (written, already identical). A differing file on the host is never overwritten:
        then nothing is written and HostError names the files."""
        h = self.host
        answer = self.call("restore_site", site_dir=str(site.site_dir(agency, h)),
                           web_root=str(h.web_root), dirs=dict(dirs), files=[
                               {"path": rel, "data": base64.b64encode(f.data or b"").decode(),
                                "mode": f.mode, "mtime": f.mtime} for rel, f in files.items()])
        if answer["conflicts"]:
            raise HostError(h.name, f"not restored: {len(answer['conflicts'])} file(s) on the "
                                    f"host differ from the archive: "
                                    f"{', '.join(answer['conflicts'][:5])}",
                            hint="move them away (or offboard the agency first), then re-run")
        return answer["written"], answer["unchanged"]
