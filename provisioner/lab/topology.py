"""The lab's description: which hosts and servers it has, how each server starts and is
probed, and the mount namespace a production-shaped host's commands run in.

A production-shaped host (``lab.production_hosts``) runs in its own mount namespace,
where lab folders are mounted over /etc/nginx, /var/www, ... and SSH logins are a sudo
user's; the other hosts keep their files under ``lab.dir``. Every nginx's workers run
as www-data.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

from ..dns.tsig import load_tsig_key
from ..errors import LabError
from ..registry.models import Host, Inventory, Nameserver, Settings
from . import processes
from .layout import LabPaths, require_lab
from .probes import probe_acme, probe_dns, probe_ssh, probe_tcp
from .processes import ServerSpec
from .render import dns_endpoints

PEBBLE_BINARY = "/usr/bin/pebble"
NAMED_BINARY = "/usr/sbin/named"
SSHD_BINARY = "/usr/sbin/sshd"
PDNS_BINARY = "/usr/sbin/pdns_server"
UNSHARE_BINARY = "/usr/bin/unshare"
NSENTER_BINARY = "/usr/bin/nsenter"
SHELL = "/bin/sh"


def _loopback_ipv4(value: str, what: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise LabError(what, f"{value!r} is not an IP address",
                       hint="lab hosts need an IPv4 loopback ansible_host") from None
    if addr.version != 4 or not addr.is_loopback:
        raise LabError(what, f"{value} is not in 127.0.0.0/8", hint="the lab only runs on loopback")
    return str(addr)


def _in_new_namespace(script: Path, argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` in a mount namespace of its own, prepared by ``script`` (which then execs it)."""
    return (UNSHARE_BINARY, "--mount", "--propagation", "private", "--", SHELL, str(script),
            *argv)


class LabTopology:
    """What the lab of one inventory is: its hosts, addresses and servers, where each
    host's files live on this machine, and how Ansible reaches the hosts."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.settings = inventory.settings
        self.lab = require_lab(self.settings)
        self.paths = LabPaths(self.lab.dir)
        for name in self.lab.production_hosts:
            if name not in inventory.hosts:
                raise LabError(name, "lab.production_hosts names a host hosts.yml does not have",
                               hint="name hosts of the inventory")
        self.hosts = [h for h in inventory.hosts.values()
                      if h.lab or h.name in self.lab.production_hosts]
        if self.settings.primary.address != self.lab.ns1:
            raise LabError("ns1", f"dns_primary is {self.settings.primary.address} but the lab's "
                                  f"ns1 is {self.lab.ns1}",
                           hint="make dns_primary.address equal lab.ns1")
        for name in ("ns1", "ns2", "acme"):
            _loopback_ipv4(getattr(self.lab, name), name)
        for host in self.hosts:
            _loopback_ipv4(host.ssh_address, host.name)
            _loopback_ipv4(host.public_ipv4, host.name)

    def production(self, host: Host) -> bool:
        """A production-shaped host: its own mount namespace, Debian's paths, a sudo user."""
        return host.name in self.lab.production_hosts

    def local(self, host: Host, path: Path) -> Path:
        """Where one of a host's paths lives on this machine (the lab's side of a mount)."""
        return self.paths.host(host).outside(path) if self.production(host) else Path(path)

    @property
    def acme_ca_file(self) -> Path:
        return self.settings.acme.ca_bundle or self.paths.default_api_ca

    @property
    def acme_directory_url(self) -> str:
        return f"https://{self.lab.acme}:{self.lab.acme_port}/dir"

    def addresses(self) -> list[str]:
        """Every loopback address a lab server listens on, in start order."""
        wanted = [self.lab.ns1, self.lab.ns2, *([self.lab.pdns] if self.lab.pdns else [])]
        for host in self.hosts:
            wanted += [host.ssh_address, host.public_ipv4]
        wanted.append(self.lab.acme)
        return list(dict.fromkeys(wanted))

    def key_name(self) -> str:
        if self.settings.tsig_key_file.exists():
            return load_tsig_key(self.settings.tsig_key_file).name
        return f"{self.settings.inventory_id}-lab"

    def servers(self) -> list[ServerSpec]:
        """Every lab server, ns1 first (ns2 transfers from it)."""
        ep = dns_endpoints(self.settings)
        zone = self.settings.zone
        specs = []
        for name, address, port in (("ns1", ep.ns1, ep.ns1_port), ("ns2", ep.ns2, ep.ns2_port)):
            conf = self.paths.named_conf(name)
            specs.append(ServerSpec(
                name=name,
                role="DNS primary" if name == "ns1" else "DNS secondary",
                address=f"{address}:{port}",
                argv=(NAMED_BINARY, "-f", "-4", "-c", str(conf)),
                cwd=self.paths.ns_dir(name),
                log=self.paths.ns_dir(name) / "named.out",
                marker=str(conf),
                probe=lambda t, a=address, p=port: probe_dns(a, p, zone, t),
                extra_logs=(self.paths.ns_dir(name) / "named.log",),
                stage=0 if name == "ns1" else 1,  # ns2 transfers from ns1 as it starts
            ))
        if self.lab.pdns:
            specs.append(ServerSpec(
                name="pdns",
                role="DNS primary (PowerDNS)",
                address=f"{self.lab.pdns}:53",
                argv=(PDNS_BINARY, f"--config-dir={self.paths.pdns_dir}"),
                cwd=self.paths.pdns_dir,
                log=self.paths.pdns_dir / "pdns.log",
                marker=str(self.paths.pdns_dir),
                probe=lambda t, a=self.lab.pdns: probe_dns(a, 53, zone, t),
            ))
        specs += [self._sshd_spec(host) for host in self.hosts]
        specs += [self._nginx_spec(host) for host in self.hosts]
        specs.append(ServerSpec(
            name="acme",
            role="ACME CA (Pebble)",
            address=f"{self.lab.acme}:{self.lab.acme_port}",
            argv=(PEBBLE_BINARY, "-config", str(self.paths.pebble_config),
                  "-dnsserver", f"{ep.ns1}:{ep.ns1_port}"),
            cwd=self.paths.pebble_dir,
            log=self.paths.pebble_dir / "pebble.log",
            marker=str(self.paths.pebble_config),
            probe=lambda t: probe_acme(self.acme_directory_url, self.acme_ca_file, t),
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        ))
        return specs

    def on_host(self, host: Host, argv: tuple[str, ...]) -> tuple[str, ...]:
        """A command that runs as the host sees its files: a production-shaped host's
        joins the mount namespace its sshd holds (/proc/0, none, while sshd is down)."""
        if not self.production(host):
            return argv
        holder = self.running_pid(self._sshd_spec(host))
        return (NSENTER_BINARY, f"--mount=/proc/{holder or 0}/ns/mnt", "--", *argv)

    def _sshd_spec(self, host: Host) -> ServerSpec:
        """sshd; on a production-shaped host it starts the mount namespace and holds it."""
        hp = self.paths.host(host)
        argv: tuple[str, ...] = (SSHD_BINARY, "-D", "-e", "-f", str(hp.sshd_config))
        if self.production(host):
            argv = _in_new_namespace(hp.namespace_script, argv)
        return ServerSpec(
            name=f"{host.name}-sshd", role=f"{host.name} OpenSSH",
            address=f"{host.ssh_address}:{host.ssh_port}", argv=argv, cwd=hp.dir,
            log=hp.sshd_log, marker=str(hp.sshd_config),
            probe=lambda t, a=host.ssh_address, p=host.ssh_port: probe_ssh(a, p, t),
            program=SSHD_BINARY, namespace=self.production(host),
        )

    def _nginx_spec(self, host: Host) -> ServerSpec:
        """nginx; on a production-shaped host it joins the namespace sshd holds and runs
        from /etc/nginx/nginx.conf there (``-p``, a prefix its config never uses, makes
        the command line this lab's own)."""
        hp = self.paths.host(host)
        error_log = host.log_dir / "error.log"
        argv: tuple[str, ...] = (host.nginx_binary, "-c", str(host.nginx_main_config),
                                 "-e", str(error_log), "-g", "daemon off;")
        marker, stage = str(host.nginx_main_config), 1
        if not self.production(host) and hp.nginx_namespace_script.exists():
            argv = _in_new_namespace(hp.nginx_namespace_script, argv)
        if self.production(host):
            marker, stage = f"{hp.dir}/", 2
            argv = self.on_host(host, (host.nginx_binary, "-p", f"{hp.dir}/", "-c",
                                       str(host.nginx_main_config), "-g", "daemon off;"))
            error_log = hp.outside(Path("/var/log/nginx/error.log"))
        return ServerSpec(
            name=f"{host.name}-nginx",
            role=f"{host.name} nginx",
            address=f"{host.public_ipv4}:80,443",
            argv=argv,
            cwd=hp.dir,
            log=hp.dir / "nginx.out",
            marker=marker,
            probe=lambda t, a=host.public_ipv4: probe_tcp(a, (80, 443), t),
            extra_logs=(error_log,),
            program=host.nginx_binary,
            stage=stage,
        )

    def ansible_env(self) -> dict[str, str]:
        """Environment for ansible(-runner) against the lab hosts.

        Control sockets and temp files stay in the lab dir, so ``lab down`` can close
        ControlPersist masters and nothing lands in ~/.ansible.
        """
        known_hosts = self.settings.known_hosts_file
        return {
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.paths.control_dir),
            "ANSIBLE_LOCAL_TEMP": str(self.paths.ansible_local_tmp),
            "ANSIBLE_REMOTE_TEMP": str(self.paths.ansible_remote_tmp),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": (f"-o ControlMaster=auto -o ControlPersist=60s "
                                 f"-o UserKnownHostsFile={known_hosts} "
                                 f"-o StrictHostKeyChecking=yes"),
        }

    def ansible_vars(self) -> dict[str, str]:
        """Extra vars for playbooks against the lab hosts (same machine as the controller)."""
        return {"ansible_remote_tmp": str(self.paths.ansible_remote_tmp)}

    def pdns_settings(self) -> Settings:
        """The settings of an inventory whose DNS is the lab's PowerDNS: the one primary
        and nameserver of its zone, named pdns.<zone>."""
        server = Nameserver(f"pdns.{self.settings.zone}", self.lab.pdns or "")
        return replace(self.settings, primary=server, nameservers=(server,))

    def running_pid(self, spec: ServerSpec) -> int | None:
        return processes.running_pid(self.paths, spec)
