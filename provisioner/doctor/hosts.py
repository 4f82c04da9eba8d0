"""The doctor's checks of one web host: over its one SSH connection (the host agent),
and its ports 80 and 443 from here."""

from __future__ import annotations

import socket
import time
from typing import Any

from ..errors import ProvisionerError
from ..hosts.agent import HostClient
from ..registry.models import Host, Inventory
from .checks import (
    PORT_TIMEOUT,
    Check,
    clock_check,
    disk_check,
    error_check,
    http_directives,
    nginx_version,
    server_tokens_check,
    tls_protocols_check,
)


def check_host(inventory: Inventory, host: Host) -> list[Check]:
    """Every check of one web host: one SSH connection; ports from here."""
    checks = [ports_check(host)]
    client = HostClient(host, inventory.settings.known_hosts_file)
    try:
        client.connect()
    except ProvisionerError as exc:
        return [error_check("ssh", host.name, exc), *checks,
                *(Check(i, host.name, "skip", "not checked: no SSH connection")
                  for i in ("sudo", "nginx", "nginx_tls_protocols", "nginx_server_tokens",
                            "disk", "clock"))]
    try:
        checks.insert(0, Check("ssh", host.name, "pass",
                               f"{host.ssh_user}@{host.ssh_address}:{host.ssh_port}, host key "
                               "known"))
        checks += _through_agent(client, host)
    finally:
        client.close()
    return checks


def _through_agent(client: HostClient, host: Host) -> list[Check]:
    try:
        preflight = client.preflight()
        started = time.time()
        config, host_time = client.doctor_facts()
        skew = host_time - (started + time.time()) / 2
    except ProvisionerError as exc:
        sudo = host.ssh_user != "root"
        failed = error_check("sudo" if sudo else "agent", host.name, exc,
                             "let the user run sudo without a password" if sudo else "")
        return [failed, *(Check(i, host.name, "skip", "not checked: the host agent did not run")
                          for i in ("nginx", "nginx_tls_protocols", "nginx_server_tokens",
                                    "disk", "clock"))]
    checks = [sudo_check(host, preflight.uid), nginx_check(host, preflight)]
    checks += config_checks(host, config, nginx_version(preflight.nginx_version))
    checks.append(disk_check(host.name, str(host.web_root),
                             preflight.free_bytes.get(str(host.web_root))))
    checks.append(clock_check(host.name, skew))
    return checks


def sudo_check(host: Host, uid: int) -> Check:
    if host.ssh_user == "root":
        return Check("sudo", host.name, "skip", "logs in as root: no sudo needed")
    if uid != 0:
        return Check("sudo", host.name, "fail", f"commands run as uid {uid}, not root",
                     f"give {host.ssh_user} password-less sudo")
    return Check("sudo", host.name, "pass", f"{host.ssh_user} runs sudo without a password")


def nginx_check(host: Host, preflight: Any) -> Check:
    if not preflight.nginx_version:
        return Check("nginx", host.name, "fail", f"nginx not found at {host.nginx_binary}",
                     "install nginx or fix nginx_binary")
    if not preflight.nginx_test_ok:
        last = (preflight.nginx_test_output.strip().splitlines() or ["?"])[-1]
        return Check("nginx", host.name, "fail", f"{preflight.nginx_version}: nginx -t fails: "
                                                f"{last}", "fix the config nginx -t names")
    return Check("nginx", host.name, "pass", f"{preflight.nginx_version}, nginx -t ok")


def config_checks(host: Host, config: str | None,
                  version: tuple[int, ...] | None) -> list[Check]:
    where = str(host.nginx_main_config)
    try:
        if config is None:
            raise ValueError(f"{where} is missing or a symlink")
        directives = http_directives(config)
    except ValueError as exc:
        problem = Check("nginx_tls_protocols", host.name, "fail",
                        f"cannot read the main config: {exc}", "check nginx_main_config")
        return [problem, Check("nginx_server_tokens", host.name, "skip",
                               "not checked: the main config is unreadable")]
    return [tls_protocols_check(host.name, directives, version),
            server_tokens_check(host.name, directives)]


def ports_check(host: Host) -> Check:
    addresses = [host.public_ipv4, *([host.public_ipv6] if host.public_ipv6 else [])]
    closed = []
    for address in addresses:
        for port in (80, 443):
            try:
                socket.create_connection((address, port), timeout=PORT_TIMEOUT).close()
            except OSError as exc:
                closed.append(f"{_join(address, port)} ({exc.strerror or exc})")
    if closed:
        return Check("ports", host.name, "fail", f"no answer on {', '.join(closed)}",
                     "start nginx and open ports 80 and 443 in the firewall")
    return Check("ports", host.name, "pass",
                 f"80 and 443 answer on {', '.join(addresses)}")


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
