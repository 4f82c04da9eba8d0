"""hosts.yml: the Ansible inventory's hosts and their vars (group vars applied
top-down), validated host by host."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import Problem
from ..lifecycle import access
from . import yamlsrc
from .fields import LABEL_RE, UNSAFE_RE, Collector, is_hostname, is_ip
from .models import Host, SshdSettings

HOST_PATH_FIELDS = (
    "nginx_main_config", "nginx_sites_dir", "web_root", "acme_webroot", "tls_dir", "log_dir",
)
HOST_KEYS = (
    "ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
    "ansible_python_interpreter", "public_ipv4", "public_ipv6", "host_fqdn", "nginx_binary",
    "ansible_become", "lab", *HOST_PATH_FIELDS, *access.SSHD_HOST_VARS,
)


def load_hosts(path: Path, variables: dict[str, str]) -> tuple[dict[str, Host | None], list[Problem]]:
    """Every declared host; an invalid one maps to None (its problems are reported)."""
    data, lines = yamlsrc.load(path)
    c = Collector(path, lines)
    hosts: dict[str, Host | None] = {}
    if not isinstance(data, dict) or not isinstance(data.get("all"), dict):
        c.add((), "must be an Ansible YAML inventory starting with 'all:'")
        return hosts, c.problems
    for name, host_vars, keypath in _walk_inventory(c, data["all"], ("all",), {}):
        hosts[name] = _host(c, name, host_vars, keypath, variables)
    if not hosts and not c.problems:
        c.add(("all",), "no hosts defined")
    return hosts, c.problems


def _walk_inventory(c: Collector, group: Any, keypath: tuple, inherited: dict):
    """Yield (host, merged vars, keypath) for every host, group vars applied top-down."""
    if not isinstance(group, dict):
        c.add(keypath, "a group must be a mapping of hosts, vars and children")
        return
    c.unknown_keys(group, ("hosts", "vars", "children"), keypath)
    group_vars = group.get("vars") or {}
    if not isinstance(group_vars, dict):
        c.add((*keypath, "vars"), "must be a mapping")
        group_vars = {}
    merged = {**inherited, **group_vars}
    hosts = group.get("hosts") or {}
    if not isinstance(hosts, dict):
        c.add((*keypath, "hosts"), "must be a mapping of host names")
        hosts = {}
    for name, host_vars in hosts.items():
        if not isinstance(name, str) or not LABEL_RE.match(name):
            c.add((*keypath, "hosts", name), "host name must be a DNS label (a-z, 0-9, -)")
            continue
        if host_vars is not None and not isinstance(host_vars, dict):
            c.add((*keypath, "hosts", name), "host vars must be a mapping")
            continue
        yield name, {**merged, **(host_vars or {})}, (*keypath, "hosts", name)
    children = group.get("children") or {}
    if not isinstance(children, dict):
        c.add((*keypath, "children"), "must be a mapping of groups")
        return
    for child_name, child in children.items():
        yield from _walk_inventory(c, child or {}, (*keypath, "children", child_name), merged)


def _host(c: Collector, name: str, data: dict, keypath: tuple,
          variables: dict[str, str]) -> Host | None:
    if not isinstance(data, dict):
        c.add(keypath, "host vars must be a mapping")
        return None
    before = len(c.problems)
    c.unknown_keys(data, HOST_KEYS, keypath)
    ssh_address = data.get("ansible_host", name)
    if not (is_hostname(str(ssh_address)) or is_ip(ssh_address)):
        c.add((*keypath, "ansible_host"), f"not a host name or IP address: {ssh_address!r}")
    user = data.get("ansible_user", "root")
    if not isinstance(user, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        c.add((*keypath, "ansible_user"), "not a valid user name")
    ipv4 = c.ip(data, "public_ipv4", keypath, 4)
    ipv6 = c.ip(data, "public_ipv6", keypath, 6, required=False)
    fqdn = c.hostname(data, "host_fqdn", keypath, required=False)
    key_file = c.safe_path(data, "ansible_ssh_private_key_file", variables, keypath)
    nginx_binary = data.get("nginx_binary", "/usr/sbin/nginx")
    if not isinstance(nginx_binary, str) or UNSAFE_RE.search(nginx_binary) \
            or not nginx_binary.startswith("/"):
        c.add((*keypath, "nginx_binary"), "must be an absolute path without spaces or quotes")
    paths = {key: c.safe_path(data, key, variables, keypath) for key in HOST_PATH_FIELDS}
    sshd = _sshd_settings(c, data, variables, keypath)
    port = c.port(data, "ansible_port", keypath, 22)
    lab = c.flag(data, "lab", keypath, False)
    if not c.flag(data, "ansible_become", keypath, user != "root") and user != "root":
        c.add((*keypath, "ansible_become"), f"must be true: {user} is not root",
              hint="the host agent and the playbooks run as root through sudo")
    if len(c.problems) > before:
        return None
    return Host(
        name=name, ssh_address=str(ssh_address), ssh_port=port, ssh_user=user,
        ssh_key_file=key_file, public_ipv4=ipv4, public_ipv6=ipv6, fqdn=fqdn,
        nginx_binary=nginx_binary, lab=lab, sshd=sshd, **paths,
    )


def _sshd_settings(c: Collector, data: dict, variables: dict[str, str],
                   keypath: tuple) -> SshdSettings:
    """Where the host's sshd takes provisioner's SFTP drop-in and keys (Debian's paths
    unless the host vars say otherwise)."""
    given = {field: c.safe_path(data, var, variables, keypath, required=False)
             for var, field in access.SSHD_HOST_VARS.items()}
    return SshdSettings(**{field: PurePosixPath(path)
                                  for field, path in given.items() if path is not None})
