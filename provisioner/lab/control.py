"""``Lab``: ``up`` / ``down`` / ``status`` / ``reset`` of the lab, returning dataclasses that
the CLI renders, and the reload of a lab host's nginx.

The lab owns only what it created: processes by the PID files it wrote (checked
against /proc/PID/cmdline before any signal), the loopback addresses it recorded as
added, and the files under ``lab.dir`` plus the key, trust and known_hosts files
the inventory names (and the system user of a production-shaped host, which it creates
when missing and leaves in place).
"""

from __future__ import annotations

import shutil
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from ..dns.tsig import load_tsig_key
from ..errors import HostError, LabError
from ..hosts.agent import HostClient, host_agent
from ..registry.models import Host
from ..verify.http import request_once
from ..verify.tls import ProbeFailure
from .keys import merge_roots, write_file
from .loopback import ensure_addresses, remove_addresses
from .prepare import LabFiles
from .probes import STATUS_PROBE_TIMEOUT
from .processes import STOP_TIMEOUT, ServerResult, close_ssh_masters, failure, start, stop
from .render import PEBBLE_MANAGEMENT_PORT


@dataclass(frozen=True)
class UpReport:
    lab_dir: Path
    servers: tuple[ServerResult, ...]
    addresses_added: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class DownReport:
    lab_dir: Path
    servers: tuple[ServerResult, ...]
    addresses_removed: tuple[str, ...]
    ssh_masters_closed: int


@dataclass(frozen=True)
class ServerStatus:
    name: str
    role: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str


@dataclass(frozen=True)
class ResetReport:
    lab_dir: Path
    sites_removed: tuple[str, ...]
    files_removed: int
    zone_serial: int
    restarted: tuple[str, ...]
    reloaded: tuple[str, ...]


class Lab(LabFiles):
    """The lab of one inventory: its servers, their files and their processes."""

    def up(self) -> UpReport:
        """Start every server that is not running; servers already up are left alone."""
        started = time.monotonic()
        self.prepare()
        added = ensure_addresses(self.paths, self.addresses())
        results = []
        for stage in sorted({spec.stage for spec in self.servers()}):
            # Specs again at every stage: a later one names an earlier one's PID.
            results += start(self.paths, [s for s in self.servers() if s.stage == stage])
        order = [s.name for s in self.servers()]
        results.sort(key=lambda result: order.index(result.name))
        self.refresh_trust_roots()
        return UpReport(self.paths.dir, tuple(results), tuple(added),
                        round(time.monotonic() - started, 2))

    def down(self) -> DownReport:
        """Stop what the lab started and remove the loopback addresses it added."""
        closed = close_ssh_masters(self.paths)
        results = stop(self.paths, list(reversed(self.servers())))
        removed = remove_addresses(self.paths)
        return DownReport(self.paths.dir, tuple(reversed(results)), tuple(removed), closed)

    def status(self) -> list[ServerStatus]:
        statuses = []
        for spec in self.servers():
            pid = self.running_pid(spec)
            if pid is None:
                stale = self.paths.pid_file(spec.name).exists()
                statuses.append(ServerStatus(spec.name, spec.role, spec.address, None, False,
                                             False, "stale pid file" if stale else "not running"))
                continue
            probe = spec.probe(STATUS_PROBE_TIMEOUT)
            statuses.append(ServerStatus(spec.name, spec.role, spec.address, pid, True,
                                         probe.ok, probe.detail))
        return statuses

    def reset(self) -> ResetReport:
        """Wipe provisioned sites, agency records and installed certificates; keep keys."""
        for host in self.hosts:
            for d in self._wiped_dirs(host):
                if not d.resolve().is_relative_to(self.paths.dir.resolve()):
                    raise LabError(host.name, f"{d} is outside the lab dir {self.paths.dir}",
                                   hint="lab reset only wipes folders inside lab.dir")
        self.prepare()
        sites, removed = [], 0
        for host in self.hosts:
            sites_dir = self.local(host, host.nginx_sites_dir)
            sites += [f"{host.name}:{p.name}" for p in sorted(sites_dir.iterdir())]
            for d in self._wiped_dirs(host):
                removed += _empty_dir(d)
        specs = {s.name: s for s in self.servers()}
        dns_specs = [specs[name] for name in ("ns1", "ns2", "pdns") if name in specs]
        was_running = [s.name for s in dns_specs if self.running_pid(s) is not None]
        stop(self.paths, dns_specs)
        for server in ("ns1", "ns2"):
            zone_file = self.paths.zone_file(server, self.settings.zone)
            for path in (zone_file, zone_file.with_name(zone_file.name + ".jnl")):
                path.unlink(missing_ok=True)
        self.paths.pdns_database.unlink(missing_ok=True)
        serial = self.write_fresh_zone()
        self._prepare_pdns(load_tsig_key(self.settings.tsig_key_file))
        if was_running:
            start(self.paths, dns_specs[:1])
            start(self.paths, dns_specs[1:])
        reloaded = []
        for host in self.hosts:
            if self.running_pid(specs[f"{host.name}-nginx"]) is not None:
                self.reload_nginx(host)  # drops the removed vhosts
                reloaded.append(host.name)
        return ResetReport(self.paths.dir, tuple(sites), removed, serial, tuple(was_running),
                           tuple(reloaded))

    def _wiped_dirs(self, host: Host) -> list[Path]:
        return [self.local(host, d) for d in (host.nginx_sites_dir, host.web_root,
                                              host.acme_webroot, host.tls_dir)]

    def reload_nginx(self, host: Host, timeout: float = STOP_TIMEOUT) -> None:
        """Reload a lab host's nginx exactly as the product does on a web host: return
        once no old worker takes connections; a config nginx kept out is an error.
        A production-shaped host is reloaded over SSH (its nginx is in its namespace)."""
        spec = self._nginx_spec(host)
        if self.running_pid(spec) is None:
            raise LabError(spec.name, "not running", hint="run 'provisioner lab up'")
        if self.production(host):
            try:
                with HostClient(host, self.settings.known_hosts_file) as client:
                    client.reload_nginx()
            except HostError as exc:
                raise failure(spec, f"reload failed: {exc}") from None
            return
        nginx = host_agent().Nginx(str(host.nginx_binary), str(host.nginx_main_config))
        ok, output = nginx.reload(settle=timeout)
        if not ok:
            raise failure(spec, f"reload failed: {output}")

    # ------------------------------------------------------------------ Pebble roots

    def refresh_trust_roots(self) -> None:
        """Fetch Pebble's issuing root (new at every start) into trust_roots[0]."""
        base = f"https://{self.lab.acme}:{PEBBLE_MANAGEMENT_PORT}"
        context = ssl.create_default_context(cafile=str(self.acme_ca_file))
        root = _fetch_pem(f"{base}/roots/0", context)
        intermediate = _fetch_pem(f"{base}/intermediates/0", context)
        write_file(self.paths.pebble_intermediates, intermediate)
        write_file(self.paths.pebble_dir / "root.pem", root)
        if self.settings.trust_roots:
            target = self.settings.trust_roots[0]
            existing = target.read_text() if target.exists() else ""
            write_file(target, merge_roots(root, existing))


def _fetch_pem(url: str, context: ssl.SSLContext) -> str:
    """A PEM file from Pebble's management API (its roots and intermediates)."""
    try:
        response = request_once("GET", url, ssl_context=context, timeout=5)
    except ProbeFailure as exc:
        raise LabError("acme", f"cannot fetch Pebble's roots: {exc}") from None
    if response.status != 200:
        raise LabError("acme", f"cannot fetch Pebble's roots: GET {url}: HTTP {response.status}")
    return response.body.decode()


def _empty_dir(path: Path) -> int:
    """Delete everything inside ``path`` (not ``path`` itself); return how many entries."""
    count = 0
    if not path.is_dir():
        return 0
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        count += 1
    return count
