"""Where every lab file lives: the lab's own folder and each web host's (pure paths),
and the inventory's lab block they derive from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from ..registry.models import Host, LabSettings, Settings

# What a production-shaped host's mount namespace covers: each of these paths is a lab
# folder inside it (the machine's own stay untouched). /var/lib/nginx holds nginx's
# temp files, /etc/sudoers.d the sudo user's drop-in, /home its ~/.ssh, /run the pid files,
# /etc/ssh the sshd drop-ins and agencies' SFTP keys provisioner writes.
NAMESPACE_MOUNTS = ("/etc/nginx", "/etc/sudoers.d", "/var/www", "/var/log/nginx",
                    "/var/lib/nginx", "/home", "/run", "/etc/ssh")


@dataclass(frozen=True)
class HostPaths:
    """Lab-internal files of one web host (the inventory names the nginx/site paths)."""

    dir: Path

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def sshd_config(self) -> Path:
        return self.ssh_dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def sshd_pid(self) -> Path:
        return self.run_dir / "sshd.pid"

    @property
    def nginx_pid(self) -> Path:
        """nginx's own pid file: ``nginx -c CONF -s reload`` reads it."""
        return self.run_dir / "nginx.pid"

    @property
    def temp_dir(self) -> Path:
        return self.dir / "tmp"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def nginx_namespace_script(self) -> Path:
        return self.dir / "nginx-namespace.sh"

    # A production-shaped host: the folders its mount namespace puts over the system's.

    @property
    def fs_dir(self) -> Path:
        """``fs/etc/nginx`` is the host's /etc/nginx, and so on for NAMESPACE_MOUNTS."""
        return self.dir / "fs"

    @property
    def namespace_script(self) -> Path:
        return self.dir / "namespace.sh"

    def outside(self, path: Path) -> Path:
        """Where a path inside the host's namespace lives on this machine."""
        path = Path(path)
        for mount in NAMESPACE_MOUNTS:
            if path.is_relative_to(mount):
                return self.fs_dir / path.relative_to("/")
        raise LabError(self.dir.name, f"{path} is outside the folders the lab mounts "
                                      f"({', '.join(NAMESPACE_MOUNTS)})",
                       hint="a production-shaped lab host keeps its files under those paths")


@dataclass(frozen=True)
class LabPaths:
    """Every file the lab keeps under ``lab.dir``."""

    dir: Path

    @property
    def run_dir(self) -> Path:
        """The lab's own PID files and the record of loopback addresses it added."""
        return self.dir / "run"

    @property
    def addresses_file(self) -> Path:
        return self.run_dir / "addresses.json"

    def pid_file(self, server: str) -> Path:
        return self.run_dir / f"{server}.pid"

    def ns_dir(self, server: str) -> Path:
        return self.dir / server

    def named_conf(self, server: str) -> Path:
        return self.ns_dir(server) / "named.conf"

    def zone_file(self, server: str, zone: str) -> Path:
        return self.ns_dir(server) / f"db.{zone}"

    def host(self, host: Host) -> HostPaths:
        return HostPaths(self.dir / host.name)

    @property
    def pdns_dir(self) -> Path:
        return self.dir / "pdns"

    @property
    def pdns_config(self) -> Path:
        return self.pdns_dir / "pdns.conf"

    @property
    def pdns_database(self) -> Path:
        return self.pdns_dir / "pdns.sqlite3"

    @property
    def pebble_dir(self) -> Path:
        return self.dir / "pebble"

    @property
    def pebble_config(self) -> Path:
        return self.pebble_dir / "pebble.json"

    @property
    def api_ca_key(self) -> Path:
        return self.pebble_dir / "api-ca.key"

    @property
    def api_cert(self) -> Path:
        return self.pebble_dir / "api-cert.pem"

    @property
    def api_key(self) -> Path:
        return self.pebble_dir / "api-key.pem"

    @property
    def pebble_intermediates(self) -> Path:
        return self.pebble_dir / "intermediates.pem"

    @property
    def default_api_ca(self) -> Path:
        return self.pebble_dir / "api-ca.pem"

    @property
    def control_dir(self) -> Path:
        """Ansible's ANSIBLE_SSH_CONTROL_PATH_DIR: short, Unix sockets allow ~107 bytes."""
        return self.dir / "cp"

    @property
    def ansible_local_tmp(self) -> Path:
        return self.dir / "ansible" / "local"

    @property
    def ansible_remote_tmp(self) -> Path:
        return self.dir / "ansible" / "remote"


def require_lab(settings: Settings) -> LabSettings:
    if settings.lab is None:
        raise LabError("inventory", "group_vars/all.yml has no 'lab' block",
                       hint="the lab needs lab: {dir, ns1, ns2, acme, acme_port}")
    return settings.lab
