"""What ``lab up`` writes before any server starts: folders, keys, certificates, configs,
the PowerDNS database, known_hosts, and a production-shaped host's namespace folders,
system user and sudoers drop-in (idempotent: existing keys are kept)."""

from __future__ import annotations

import contextlib
import os
import pwd
import sqlite3
import subprocess
import time
from pathlib import Path

from ..dns.tsig import TsigKey
from ..errors import LabError
from ..registry.models import Host
from .keys import (
    api_cert_fits,
    ensure_backup_password,
    ensure_ssh_key,
    ensure_tsig_key,
    make_api_ca,
    make_api_cert,
    write_file,
)
from .layout import NAMESPACE_MOUNTS, HostPaths
from .render import (
    NGINX_WORKER_USER,
    known_hosts_lines,
    merge_known_hosts,
    named_conf,
    namespace_script,
    nginx_conf,
    nginx_namespace_script,
    pdns_conf,
    pebble_config,
    sshd_config,
    sudoers_drop_in,
    zone_file_text,
)
from .topology import LabTopology

PDNSUTIL = "/usr/bin/pdnsutil"
PDNS_SCHEMA = Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql")
# The zone metadata a PowerDNS primary needs for this toolkit (README, "Going live").
PDNS_ZONE_METADATA = ("TSIG-ALLOW-DNSUPDATE", "TSIG-ALLOW-AXFR")
SUDOERS_DROP_IN = "provisioner-lab"


def ensure_system_user(name: str) -> None:
    """Create the unprivileged login user of a production-shaped host if missing."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    # No password at all ("*"): a locked one ("!") would keep sshd from letting it in.
    done = subprocess.run(["useradd", "--system", "--home-dir", f"/home/{name}",
                           "--no-create-home", "--password", "*", "--shell", "/bin/sh", name],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise LabError("user", f"cannot create the user {name}: {done.stderr.strip()}",
                       hint="the lab runs as root and needs useradd (Debian's passwd package)")


def closed_ancestor(path: Path, user: str) -> Path | None:
    """The first folder on the way to ``path`` that ``user`` may not pass (mode, owner)."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise LabError("nginx", f"there is no user {user} for nginx's workers",
                       hint="Debian's base-passwd has it; create it with useradd") from None
    for folder in [*reversed(Path(path).parents), Path(path)]:
        info = folder.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == account.pw_gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return folder
    return None


class LabFiles(LabTopology):
    """The lab's files: ``prepare`` writes them all."""

    def prepare(self) -> None:
        """Create dirs, keys, certificates and configs (idempotent, keeps existing keys)."""
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        for d in (self.paths.run_dir, self.paths.control_dir, self.paths.ansible_local_tmp,
                  self.paths.ansible_remote_tmp):
            d.mkdir(parents=True, exist_ok=True)
        key = ensure_tsig_key(self.settings.tsig_key_file, f"{self.settings.inventory_id}-lab")
        self._prepare_dns(key.name)
        self._prepare_pdns(key)
        if self.settings.backup and self.settings.backup.password_file.is_relative_to(
                self.paths.dir):
            ensure_backup_password(self.settings.backup.password_file)
        self._prepare_hosts()
        self._prepare_pebble()

    def _prepare_dns(self, key_name: str) -> None:
        for name in ("ns1", "ns2"):
            self.paths.ns_dir(name).mkdir(parents=True, exist_ok=True)
            write_file(self.paths.named_conf(name),
                       named_conf(self.settings, self.paths, key_name, name))
        zone_file = self.paths.zone_file("ns1", self.settings.zone)
        if not zone_file.exists():
            self.write_fresh_zone()

    def _prepare_pdns(self, key: TsigKey) -> None:
        """PowerDNS's config and, once, its database: the zone as ns1 starts it, the TSIG
        key (written into the database: a secret never goes on a command line) and the
        zone metadata that lets that key update and transfer the zone."""
        if not self.lab.pdns:
            return
        p = self.paths
        p.pdns_dir.mkdir(parents=True, exist_ok=True)
        write_file(p.pdns_config, pdns_conf(self.settings, p, self.lab.pdns))
        if p.pdns_database.exists():
            return
        try:
            with contextlib.closing(sqlite3.connect(p.pdns_database)) as db:
                db.executescript(PDNS_SCHEMA.read_text())
                db.execute("INSERT INTO tsigkeys (name, algorithm, secret) VALUES (?, ?, ?)",
                           (key.name, key.algorithm, key.secret))
                db.commit()
            zone_file = p.pdns_dir / "zone.db"
            write_file(zone_file, zone_file_text(self.pdns_settings(),
                                                 self.inventory.hosts.values(), int(time.time())))
            zone = self.settings.zone
            self.pdnsutil("load-zone", zone, str(zone_file))
            for kind in PDNS_ZONE_METADATA:
                self.pdnsutil("set-meta", zone, kind, key.name)
            self.pdnsutil("set-meta", zone, "SOA-EDIT-DNSUPDATE", "INCREASE")
        except (OSError, sqlite3.Error, LabError) as exc:
            p.pdns_database.unlink(missing_ok=True)  # the next 'lab up' builds it again
            raise LabError("pdns", f"cannot build the PowerDNS database: {exc}",
                           hint="apt-get install pdns-server pdns-backend-sqlite3") from None

    def pdnsutil(self, *args: str) -> str:
        """Run pdnsutil on the lab's PowerDNS database (zone data and metadata)."""
        try:
            done = subprocess.run([PDNSUTIL, f"--config-dir={self.paths.pdns_dir}", *args],
                                  capture_output=True, text=True, timeout=30)
        except OSError as exc:
            raise LabError("pdns", f"cannot run {PDNSUTIL}: {exc}") from None
        if done.returncode != 0:
            raise LabError("pdns", f"pdnsutil {' '.join(args[:2])} failed: "
                                   f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    def write_fresh_zone(self) -> int:
        """Write ns1's initial zone (serial = Unix time, so it always moves forward)."""
        serial = int(time.time())
        text = zone_file_text(self.settings, self.inventory.hosts.values(), serial)
        write_file(self.paths.zone_file("ns1", self.settings.zone), text)
        return serial

    def _prepare_hosts(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        client_keys: dict[Path, str] = {}
        known: dict[str, list[str]] = {}
        for host in self.hosts:
            hp = self.paths.host(host)
            for d in (hp.ssh_dir, hp.run_dir, hp.temp_dir):
                d.mkdir(parents=True, exist_ok=True)
            for d in (host.nginx_main_config.parent, host.nginx_sites_dir, host.web_root,
                      host.acme_webroot, host.tls_dir, host.log_dir,
                      Path(host.sshd.config_dir)):
                self.local(host, d).mkdir(parents=True, exist_ok=True)
            if host.ssh_key_file not in client_keys:
                client_keys[host.ssh_key_file] = ensure_ssh_key(host.ssh_key_file,
                                                                "provisioner-lab")
            write_file(hp.authorized_keys, client_keys[host.ssh_key_file] + "\n")
            if self.production(host):
                self._prepare_namespace(host, hp)
            host_public = ensure_ssh_key(hp.host_key, f"{host.name}-lab-host")
            known[host.name] = known_hosts_lines(host.ssh_address, host.ssh_port, host_public)
            write_file(hp.sshd_config, sshd_config(host, hp, self.production(host)))
            write_file(self.local(host, host.nginx_main_config),
                       nginx_conf(host, hp, self.production(host)))
            if not self.production(host):
                self._prepare_worker_access(host, hp)
        known_hosts = self.settings.known_hosts_file
        existing = known_hosts.read_text() if known_hosts.exists() else ""
        write_file(known_hosts, merge_known_hosts(existing, known))

    def _prepare_worker_access(self, host: Host, hp: HostPaths) -> None:
        """nginx's workers run as www-data: where a folder on the way to the host's files
        is closed to them (the state dir is 0700), nginx starts in a mount namespace of
        its own that opens the way (templates/lab/nginx-namespace.sh.j2); the paths stay
        the same, the state dir stays closed for everyone else."""
        for path in (host.web_root, host.acme_webroot, host.nginx_sites_dir, host.log_dir,
                     host.tls_dir, host.nginx_main_config.parent):
            if not path.resolve().is_relative_to(hp.dir.resolve()):
                raise LabError(host.name, f"{path} is outside the lab's folder {hp.dir}",
                               hint="a lab host keeps its files under lab.dir/<host>")
        cover = closed_ancestor(hp.dir, NGINX_WORKER_USER)
        if cover is None:
            hp.nginx_namespace_script.unlink(missing_ok=True)
        else:
            write_file(hp.nginx_namespace_script, nginx_namespace_script(host, hp, cover), 0o755)

    def _prepare_namespace(self, host: Host, hp: HostPaths) -> None:
        """The folders a production-shaped host's namespace mounts, what Debian puts in
        them (mime.types, sshd's privilege separation dir), the sudo user and its
        drop-in, and the script that mounts them."""
        for mount in NAMESPACE_MOUNTS:
            hp.outside(Path(mount)).mkdir(parents=True, exist_ok=True)
        hp.outside(Path("/run/sshd")).mkdir(mode=0o755, exist_ok=True)
        mime_types = Path("/etc/nginx/mime.types")
        write_file(hp.outside(mime_types), mime_types.read_bytes())
        if host.ssh_user != "root":
            ensure_system_user(host.ssh_user)
            write_file(hp.outside(Path("/etc/sudoers.d") / SUDOERS_DROP_IN),
                       sudoers_drop_in(host.ssh_user), 0o440)
            self._prepare_home(host, hp)
        write_file(hp.namespace_script, namespace_script(host, hp), 0o755)
        self._link_sshd_config(host, hp)

    @staticmethod
    def _link_sshd_config(host: Host, hp: HostPaths) -> None:
        """The host's main sshd config path (Debian's, which ``sshd -t`` is run on before
        a drop-in goes live) names the lab's own config inside the namespace."""
        link = hp.outside(Path(host.sshd.main_config))
        if link.is_symlink() and link.readlink() == hp.sshd_config:
            return
        link.unlink(missing_ok=True)
        link.symlink_to(hp.sshd_config)

    def _prepare_home(self, host: Host, hp: HostPaths) -> None:
        """The sudo user's home in the namespace, with its ~/.ssh/authorized_keys (sshd
        reads it as that user: the lab dir itself may be closed to other users)."""
        user = pwd.getpwnam(host.ssh_user)
        home = hp.outside(Path("/home") / host.ssh_user)
        for d in (home, home / ".ssh"):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)
        write_file(home / ".ssh" / "authorized_keys", hp.authorized_keys.read_text())

    def _prepare_pebble(self) -> None:
        p = self.paths
        p.pebble_dir.mkdir(parents=True, exist_ok=True)
        ca_file = self.acme_ca_file
        if not api_cert_fits(p.api_cert, ca_file, self.lab.acme) or not p.api_key.exists():
            if ca_file.exists() and p.api_ca_key.exists():
                ca_pem, ca_key = ca_file.read_bytes(), p.api_ca_key.read_bytes()
            else:
                ca_pem, ca_key = make_api_ca()
                write_file(p.api_ca_key, ca_key, 0o600)
                write_file(ca_file, ca_pem)
            cert, key = make_api_cert(ca_pem, ca_key, self.lab.acme)
            write_file(p.api_key, key, 0o600)
            write_file(p.api_cert, cert)
        write_file(p.pebble_config, pebble_config(self.lab, p))
