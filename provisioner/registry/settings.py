"""group_vars/all.yml: the inventory's settings (zone, nameservers, ACME, lab, alerts,
backup), validated field by field."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path
from typing import Any

from ..errors import Problem
from . import yamlsrc
from .fields import EMAIL_RE, LABEL_RE, URL_RE, Collector, is_hostname, is_ip
from .models import (
    ALERT_CERT_DAYS,
    LETS_ENCRYPT_LIMITS,
    MAX_PARALLEL_ORDERS,
    RATE_LIMIT_KINDS,
    SMTP_SECURITY,
    TLS_MODES,
    AcmeSettings,
    AlertSettings,
    BackupSettings,
    EmailSettings,
    LabSettings,
    Nameserver,
    RateLimit,
    Settings,
    TelegramSettings,
    WebhookSettings,
)

SETTINGS_KEYS = (
    "inventory_id", "zone", "dns_primary", "nameservers", "tsig_key_file",
    "acme_directory", "acme_contact", "tls_mode", "known_hosts_file",
    "record_ttl", "max_change_ratio", "acme_ca_bundle", "acme_revoke_on_offboard",
    "trust_roots", "lab", "alerts", "verify_allow_private", "acme_max_parallel_orders",
    "acme_rate_limits", "acme_caa_identity", "backup",
)


def load_settings(path: Path, variables: dict[str, str]) -> tuple[Settings | None, list[Problem]]:
    data, lines = yamlsrc.load(path)
    c = Collector(path, lines)
    if not isinstance(data, dict):
        c.add((), "must be a mapping of settings")
        return None, c.problems
    c.unknown_keys({k: v for k, v in data.items() if not str(k).startswith("ansible_")},
                   SETTINGS_KEYS)
    inventory_id = c.text(data, "inventory_id")
    if inventory_id and not LABEL_RE.match(inventory_id):
        c.add(("inventory_id",), "must be a DNS-label-like id (a-z, 0-9, -)")
    zone = c.hostname(data, "zone", ())
    primary = _nameserver(c, data.get("dns_primary"), ("dns_primary",))
    nameservers = []
    if not isinstance(data.get("nameservers"), list) or not data["nameservers"]:
        c.add(("nameservers",), "must be a non-empty list of {name, address, port}")
    else:
        nameservers = [_nameserver(c, ns, ("nameservers", i))
                       for i, ns in enumerate(data["nameservers"])]
    tsig = c.safe_path(data, "tsig_key_file", variables)
    known_hosts = c.safe_path(data, "known_hosts_file", variables)
    ca_bundle = c.safe_path(data, "acme_ca_bundle", variables, required=False)
    roots = []
    raw_roots = data.get("trust_roots") or []
    if not isinstance(raw_roots, list):
        c.add(("trust_roots",), "must be a list of certificate file paths")
        raw_roots = []
    for i, _ in enumerate(raw_roots):
        root = c.safe_path(dict(enumerate(raw_roots)), i, variables, ("trust_roots",))
        if root:
            roots.append(root)
    directory = data.get("acme_directory")
    if not (isinstance(directory, str) and URL_RE.match(directory)
            and directory.startswith("https://")):
        c.add(("acme_directory",), "must be an https:// URL")
    contact = c.text(data, "acme_contact")
    if contact and not EMAIL_RE.match(contact.removeprefix("mailto:")):
        c.add(("acme_contact",), "must be an e-mail address (mailto:...)")
    tls_mode = data.get("tls_mode")
    if tls_mode not in TLS_MODES:
        c.add(("tls_mode",), f"unknown mode {tls_mode!r}", f"one of: {', '.join(TLS_MODES)}")
    ttl = data.get("record_ttl", 300)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 30 <= ttl <= 86400:
        c.add(("record_ttl",), "must be a number of seconds from 30 to 86400")
    ratio = data.get("max_change_ratio", 0.3)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        c.add(("max_change_ratio",), "must be a share between 0 and 1, e.g. 0.3")
    revoke = c.flag(data, "acme_revoke_on_offboard", (), True)
    parallel = data.get("acme_max_parallel_orders", MAX_PARALLEL_ORDERS)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 16:
        c.add(("acme_max_parallel_orders",), "must be a number of orders from 1 to 16",
              f"Let's Encrypt asks for few at once: {MAX_PARALLEL_ORDERS} is the default")
        parallel = MAX_PARALLEL_ORDERS
    rate_limits = _rate_limits(c, data.get("acme_rate_limits"))
    caa_identity = c.hostname(data, "acme_caa_identity", (), required=False)
    allow_private = c.flag(data, "verify_allow_private", (), False)
    lab = _lab_settings(c, data.get("lab"), variables)
    alerts = _alert_settings(c, data.get("alerts"), variables, lab)
    backup = _backup_settings(c, data.get("backup"), variables, lab)

    if tsig is not None:
        _check_secret_file(c, tsig, ("tsig_key_file",), lab)
    if c.problems:
        return None, c.problems
    return Settings(
        inventory_id=inventory_id,
        zone=zone,
        primary=primary,
        nameservers=tuple(nameservers),
        tsig_key_file=tsig,
        record_ttl=ttl,
        acme=AcmeSettings(directory=directory, contact=contact, ca_bundle=ca_bundle,
                          revoke_on_offboard=revoke, max_parallel_orders=parallel,
                          rate_limits=rate_limits, caa_identity=caa_identity),
        tls_mode=tls_mode,
        trust_roots=tuple(roots),
        known_hosts_file=known_hosts,
        max_change_ratio=float(ratio),
        lab=lab,
        alerts=alerts,
        verify_allow_private=allow_private,
        backup=backup,
    ), []


def _rate_limits(c: Collector, data: Any) -> tuple[RateLimit, ...]:
    """The CA's limits: Let's Encrypt's unless overridden; ``false`` turns one off."""
    if data is None:
        return LETS_ENCRYPT_LIMITS
    prefix = ("acme_rate_limits",)
    if not isinstance(data, dict):
        c.add(prefix, "must be a mapping of limits",
              f"keys: {', '.join(RATE_LIMIT_KINDS)}; each {{limit: N, hours: H}} or false")
        return LETS_ENCRYPT_LIMITS
    c.unknown_keys(data, RATE_LIMIT_KINDS, prefix)
    limits = []
    for default in LETS_ENCRYPT_LIMITS:
        value = data.get(default.kind, {})
        if value is False:
            continue
        keypath = (*prefix, default.kind)
        if not isinstance(value, dict):
            c.add(keypath, "must be {limit: N, hours: H} or false (no such limit)")
            continue
        c.unknown_keys(value, ("limit", "hours", "renewals_exempt"), keypath)
        limit, hours = value.get("limit", default.limit), value.get("hours", default.hours)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            c.add((*keypath, "limit"), "must be a whole number of at least 1")
            continue
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) \
                or not 0 < hours <= 24 * 366:
            c.add((*keypath, "hours"), "must be a number of hours (at most a year)")
            continue
        exempt = c.flag(value, "renewals_exempt", keypath, default.renewals_exempt)
        limits.append(RateLimit(default.kind, limit, float(hours), exempt))
    return tuple(limits)


def _check_secret_file(c: Collector, path: Path, keypath: tuple, lab: LabSettings | None) -> None:
    if not path.exists():
        if lab and path.is_relative_to(lab.dir):
            return  # `provisioner lab up` generates it
        c.add(keypath, f"file not found: {path}", "create it (mode 0600) or fix the path")
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        c.add(keypath, f"{path} is readable by group or others (mode {mode:04o})",
              f"run: chmod 600 {path}")


def _nameserver(c: Collector, data: Any, prefix: tuple) -> Nameserver | None:
    if not isinstance(data, dict):
        c.add(prefix, "must be a mapping with name, address and port")
        return None
    c.unknown_keys(data, ("name", "address", "port"), prefix)
    name = c.hostname(data, "name", prefix)
    address = c.ip(data, "address", prefix)
    port = c.port(data, "port", prefix, 53)
    if name and address:
        return Nameserver(name=name, address=address, port=port)
    return None


LAB_KEYS = ("dir", "ns1", "ns2", "acme", "acme_port", "pdns", "production_hosts")


def _lab_settings(c: Collector, data: Any, variables: dict[str, str]) -> LabSettings | None:
    if data is None:
        return None
    prefix = ("lab",)
    if not c.mapping(data, prefix, LAB_KEYS, "must be a mapping"):
        return None
    lab_dir = c.safe_path(data, "dir", variables, prefix)
    ips = {key: c.ip(data, key, prefix, 4) for key in ("ns1", "ns2", "acme")}
    pdns = c.ip(data, "pdns", prefix, 4, required=False)
    for key, value in {**ips, "pdns": pdns}.items():
        if value and not ipaddress.ip_address(value).is_loopback:
            c.add((*prefix, key), "the lab only runs on loopback (127.0.0.0/8)")
            return None
    port = c.port(data, "acme_port", prefix, 14000)
    production_hosts = data.get("production_hosts", [])
    if not isinstance(production_hosts, list) \
            or not all(isinstance(h, str) and LABEL_RE.match(h) for h in production_hosts):
        c.add((*prefix, "production_hosts"), "must be a list of host names")
        production_hosts = []
    if lab_dir and all(ips.values()):
        return LabSettings(dir=lab_dir, ns1=ips["ns1"], ns2=ips["ns2"], acme=ips["acme"],
                           acme_port=port, pdns=pdns,
                           production_hosts=tuple(production_hosts))
    return None


def _alert_settings(c: Collector, data: Any, variables: dict[str, str],
                    lab: LabSettings | None) -> AlertSettings | None:
    if data is None:
        return None
    prefix = ("alerts",)
    if not c.mapping(data, prefix, ("email", "webhook", "telegram", "cert_days"),
                     "must be a mapping of channels: email, webhook, telegram"):
        return None
    cert_days = data.get("cert_days", ALERT_CERT_DAYS)
    if isinstance(cert_days, bool) or not isinstance(cert_days, int) or not 1 <= cert_days <= 365:
        c.add((*prefix, "cert_days"), "must be a number of days from 1 to 365")
    before = len(c.problems)
    channels = {name: build(c, data[name], (*prefix, name), variables, lab)
                for name, build in (("email", _email_settings), ("webhook", _webhook_settings),
                                    ("telegram", _telegram_settings)) if data.get(name) is not None}
    if not channels and len(c.problems) == before:
        c.add(prefix, "no channel configured", "add email, webhook or telegram (see README)")
    return AlertSettings(email=channels.get("email"), webhook=channels.get("webhook"),
                         telegram=channels.get("telegram"), cert_days=cert_days)


BACKUP_RETENTION_PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


def _backup_settings(c: Collector, data: Any, variables: dict[str, str],
                     lab: LabSettings | None) -> BackupSettings | None:
    if data is None:
        return None
    prefix = ("backup",)
    if not c.mapping(data, prefix, ("repository", "password_file", "retention")):
        return None
    before = len(c.problems)
    repository = c.safe_path(data, "repository", variables, prefix)
    password_file = c.safe_path(data, "password_file", variables, prefix)
    if password_file is not None:
        _check_secret_file(c, password_file, (*prefix, "password_file"), lab)
    retention = data.get("retention", {})
    kept: dict[str, int] = {}
    if c.mapping(retention, (*prefix, "retention"), BACKUP_RETENTION_PERIODS):
        for period, count in retention.items():
            if period in BACKUP_RETENTION_PERIODS and (
                    isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000):
                c.add((*prefix, "retention", period), "must be a number of snapshots from 1 "
                      "to 1000", "e.g. daily: 7, weekly: 4, monthly: 6")
            elif period in BACKUP_RETENTION_PERIODS:
                kept[period] = count
        if not kept and len(c.problems) == before:
            c.add((*prefix, "retention"), "keeps nothing",
                  "e.g. {daily: 7, weekly: 4, monthly: 6}")
    if len(c.problems) > before:
        return None
    return BackupSettings(repository=repository, password_file=password_file,
                          retention={p: kept[p] for p in BACKUP_RETENTION_PERIODS if p in kept})


def _url(c: Collector, data: dict, key: str, prefix: tuple, default: str | None = None) -> str | None:
    value = data.get(key, default)
    if not (isinstance(value, str) and URL_RE.match(value)):
        c.add((*prefix, key), "must be a plain http(s) URL", "e.g. https://example.go.id/hook")
        return None
    return value


def _emails(c: Collector, data: dict, key: str, prefix: tuple, *,
            required: bool) -> tuple[str, ...]:
    value = data.get(key, [])
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or (required and not value) or \
            not all(isinstance(v, str) and EMAIL_RE.match(v) for v in value):
        c.add((*prefix, key), "must be a list of e-mail addresses",
              "e.g. [ops@paserkab.go.id]")
        return ()
    return tuple(value)


def _email_settings(c: Collector, data: Any, prefix: tuple, variables: dict[str, str],
                    lab: LabSettings | None) -> EmailSettings | None:
    keys = ("host", "port", "security", "username", "password_file", "from", "to",
            "report_to", "ca_bundle")
    if not c.mapping(data, prefix, keys):
        return None
    before = len(c.problems)
    host = data.get("host")
    if not (is_hostname(host) or is_ip(host)):
        c.add((*prefix, "host"), f"not a host name or IP address: {host!r}")
    security = data.get("security", "starttls")
    if security not in SMTP_SECURITY:
        c.add((*prefix, "security"), f"unknown security {security!r}",
              "starttls (port 587) or tls (port 465)")
    port = c.port(data, "port", prefix, 465 if security == "tls" else 587)
    username = c.text(data, "username", prefix, required=False)
    password_file = c.safe_path(data, "password_file", variables, prefix,
                                required=username is not None)
    if password_file is not None:
        _check_secret_file(c, password_file, (*prefix, "password_file"), lab)
    sender = c.text(data, "from", prefix)
    if sender and not EMAIL_RE.match(sender):
        c.add((*prefix, "from"), f"not an e-mail address: {sender!r}")
    to = _emails(c, data, "to", prefix, required=True)
    report_to = _emails(c, data, "report_to", prefix, required=False)
    ca_bundle = c.safe_path(data, "ca_bundle", variables, prefix, required=False)
    if len(c.problems) > before:
        return None
    return EmailSettings(host=str(host), port=port, security=security, username=username,
                         password_file=password_file, sender=sender, to=to,
                         report_to=report_to, ca_bundle=ca_bundle)


def _webhook_settings(c: Collector, data: Any, prefix: tuple, variables: dict[str, str],
                      lab: LabSettings | None) -> WebhookSettings | None:
    if not c.mapping(data, prefix, ("url",)):
        return None
    url = _url(c, data, "url", prefix)
    return WebhookSettings(url=url) if url else None


TELEGRAM_CHAT_RE = re.compile(r"^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")


def _telegram_settings(c: Collector, data: Any, prefix: tuple, variables: dict[str, str],
                       lab: LabSettings | None) -> TelegramSettings | None:
    if not c.mapping(data, prefix, ("api_base", "bot_token_file", "chat_id")):
        return None
    before = len(c.problems)
    api_base = _url(c, data, "api_base", prefix, "https://api.telegram.org")
    token_file = c.safe_path(data, "bot_token_file", variables, prefix)
    if token_file is not None:
        _check_secret_file(c, token_file, (*prefix, "bot_token_file"), lab)
    chat_id = data.get("chat_id")
    if isinstance(chat_id, bool) or not TELEGRAM_CHAT_RE.match(str(chat_id)):
        c.add((*prefix, "chat_id"), f"not a Telegram chat id: {chat_id!r}",
              "a number such as -1001234567890, or @channelname")
    if len(c.problems) > before:
        return None
    return TelegramSettings(api_base=api_base.rstrip("/"), bot_token_file=token_file,
                            chat_id=str(chat_id))


