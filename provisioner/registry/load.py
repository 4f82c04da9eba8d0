"""Load and validate the inventory: hosts.yml, group_vars/all.yml, agencies/*.yml.

Validation collects *every* problem before failing, so an operator fixes a whole
inventory in one pass. Anything that is later interpolated into an nginx config,
a path or a shell command is held to a strict character set here, and re-checked
where it is used.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ..errors import InputError, Problem
from ..lifecycle import access
from . import yamlsrc
from .models import (
    ALERT_CERT_DAYS,
    DELIVERY_COMPONENTS,
    LAPOR_CHANNEL_NAME,
    LETS_ENCRYPT_LIMITS,
    MANAGEMENT_COMPONENTS,
    MAX_PARALLEL_ORDERS,
    RATE_LIMIT_KINDS,
    RECORD_TYPES,
    SMTP_SECURITY,
    TLS_MODES,
    AcmeSettings,
    Agency,
    AlertSettings,
    BackupSettings,
    ComplaintChannel,
    EmailSettings,
    Head,
    Host,
    Inventory,
    LabSettings,
    Nameserver,
    RateLimit,
    Service,
    Settings,
    SshdSettings,
    TelegramSettings,
    WebhookSettings,
)

LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Characters that could break an nginx config, a shell line or a path when interpolated.
UNSAFE_RE = re.compile(r"[;{}'\"`$\\\s\x00]")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TEMPLATE_VAR_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")
URL_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/+\-=?&#:@!,()*]*)?$")

AGENCY_REQUIRED = (
    "slug", "name", "short_name", "address", "phone", "email",
    "opening_hours", "head", "maklumat", "services",
)
AGENCY_OPTIONAL = (
    "subdomain", "host", "external", "description", "complaint_channels",
    "sample", "status", "record_type", "content_access",
)
SERVICE_OPTIONAL = ("slug", "description", *MANAGEMENT_COMPONENTS)
SETTINGS_KEYS = (
    "inventory_id", "zone", "dns_primary", "nameservers", "tsig_key_file",
    "acme_directory", "acme_contact", "tls_mode", "known_hosts_file",
    "record_ttl", "max_change_ratio", "acme_ca_bundle", "acme_revoke_on_offboard",
    "trust_roots", "lab", "alerts", "verify_allow_private", "acme_max_parallel_orders",
    "acme_rate_limits", "acme_caa_identity", "backup",
)
HOST_PATH_FIELDS = (
    "nginx_main_config", "nginx_sites_dir", "web_root", "acme_webroot", "tls_dir", "log_dir",
)
HOST_KEYS = (
    "ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
    "ansible_python_interpreter", "public_ipv4", "public_ipv6", "host_fqdn", "nginx_binary",
    "ansible_become", "lab", *HOST_PATH_FIELDS, *access.SSHD_HOST_VARS,
)


def default_state_dir(inventory_dir: Path) -> Path:
    return inventory_dir.resolve().parent / "state"


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state dir 0700 (keys, archives and history live there)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    return state_dir


def is_hostname(name: str) -> bool:
    """RFC 1123 host name: labels of letters, digits and hyphens; 253 characters at most."""
    if not isinstance(name, str) or not name or len(name.rstrip(".")) > 253:
        return False
    return all(LABEL_RE.match(label) for label in name.rstrip(".").lower().split("."))


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:63].rstrip("-") or "layanan"


class _Collector:
    """Gathers problems for one file, with line numbers from the YAML source."""

    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path = path
        self.lines = lines
        self.problems: list[Problem] = []

    def add(self, keypath: tuple, message: str, hint: str | None = None) -> None:
        line = None
        for i in range(len(keypath), -1, -1):
            line = self.lines.get(tuple(keypath[:i]))
            if line:
                break
        if keypath[:1] == ("all",) and "hosts" in keypath:
            # Name host fields "web1.key", not by their position in the group tree.
            keypath = keypath[keypath.index("hosts") + 1:]
        field = ".".join(str(k) for k in keypath) or "file"
        self.problems.append(Problem(self.path, line, field, message, hint))

    def unknown_keys(self, data: dict, allowed: tuple[str, ...], prefix: tuple = ()) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
                self.add((*prefix, key), "unknown key", hint)

    def text(self, data: dict, key: str, prefix: tuple = (), *, required: bool = True,
             multiline: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.add((*prefix, key), "missing", "this field is required")
            return None
        if type(value) is not str:  # most values are text: skip these checks for them
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                self.add((*prefix, key), "must be text")
                return None
            value = str(value)
        value = value.strip()
        if not value:
            if required:
                self.add((*prefix, key), "must not be empty")
            return None
        bad = CONTROL_RE.search(value)
        if bad or (not multiline and "\n" in value):
            self.add((*prefix, key), "contains a control character or line break",
                     "use plain single-line text")
            return None
        return value

    def paragraphs(self, data: dict, key: str, prefix: tuple = (), *,
                   required: bool = True) -> tuple[str, ...] | None:
        """A component: a text or a list of texts (list items / paragraphs)."""
        value = data.get(key)
        if value is None:
            if required:
                self.add((*prefix, key), "missing", "required: a text or a list of texts")
            return None
        if isinstance(value, list):
            keypath = (*prefix, key)
            texts = [self.text({i: item}, i, keypath, multiline=True)
                     for i, item in enumerate(value)]
        else:
            texts = [self.text(data, key, prefix, multiline=True)]
        result = [t for t in texts if t]
        if not result:
            if required:
                self.add((*prefix, key), "must not be empty")
            return None
        return tuple(result)


def _resolve_vars(value: str, variables: dict[str, str]) -> str | None:
    """Replace {{ state_dir }} / {{ inventory_dir }}; None when another variable is used."""
    unknown = [m.group(1) for m in TEMPLATE_VAR_RE.finditer(value) if m.group(1) not in variables]
    if unknown or ("{{" in TEMPLATE_VAR_RE.sub("", value)):
        return None
    return TEMPLATE_VAR_RE.sub(lambda m: variables[m.group(1)], value)


def _safe_path(c: _Collector, data: dict, key: str, variables: dict[str, str],
               prefix: tuple = (), *, required: bool = True) -> Path | None:
    raw = data.get(key)
    if raw is None:
        if required:
            c.add((*prefix, key), "missing", "an absolute path is required")
        return None
    if not isinstance(raw, str):
        c.add((*prefix, key), "must be a path")
        return None
    value = _resolve_vars(raw, variables)
    if value is None:
        c.add((*prefix, key), "uses an unknown template variable",
              "only {{ state_dir }} and {{ inventory_dir }} are supported")
        return None
    if UNSAFE_RE.search(value) or not value.startswith("/") or "/../" in value + "/":
        c.add((*prefix, key), f"not a safe absolute path: {value!r}",
              "no spaces, quotes, ';', '{', '}', '$' or '..'")
        return None
    return Path(value)


def _ip(c: _Collector, data: dict, key: str, prefix: tuple, version: int | None = None,
        *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            c.add((*prefix, key), "missing")
        return None
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        c.add((*prefix, key), f"not an IP address: {value!r}")
        return None
    if version and addr.version != version:
        c.add((*prefix, key), f"must be an IPv{version} address")
        return None
    return str(addr)


def _hostname(c: _Collector, data: dict, key: str, prefix: tuple, *,
              required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            c.add((*prefix, key), "missing")
        return None
    if not is_hostname(value):
        c.add((*prefix, key), f"not a valid DNS name: {value!r}",
              "letters, digits and hyphens in labels of 1-63 characters")
        return None
    return str(value).rstrip(".").lower()


def _port(c: _Collector, data: dict, key: str, prefix: tuple, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        c.add((*prefix, key), "must be a port number (1-65535)")
        return default
    return value


def _bool(c: _Collector, data: dict, key: str, prefix: tuple, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        c.add((*prefix, key), "must be true or false")
        return default
    return value


# --------------------------------------------------------------------------- settings

def _load_settings(path: Path, variables: dict[str, str]) -> tuple[Settings | None, list[Problem]]:
    data, lines = yamlsrc.load(path)
    c = _Collector(path, lines)
    if not isinstance(data, dict):
        c.add((), "must be a mapping of settings")
        return None, c.problems
    c.unknown_keys({k: v for k, v in data.items() if not str(k).startswith("ansible_")},
                   SETTINGS_KEYS)
    inventory_id = c.text(data, "inventory_id")
    if inventory_id and not LABEL_RE.match(inventory_id):
        c.add(("inventory_id",), "must be a DNS-label-like id (a-z, 0-9, -)")
    zone = _hostname(c, data, "zone", ())
    primary = _nameserver(c, data.get("dns_primary"), ("dns_primary",))
    nameservers = []
    if not isinstance(data.get("nameservers"), list) or not data["nameservers"]:
        c.add(("nameservers",), "must be a non-empty list of {name, address, port}")
    else:
        nameservers = [_nameserver(c, ns, ("nameservers", i))
                       for i, ns in enumerate(data["nameservers"])]
    tsig = _safe_path(c, data, "tsig_key_file", variables)
    known_hosts = _safe_path(c, data, "known_hosts_file", variables)
    ca_bundle = _safe_path(c, data, "acme_ca_bundle", variables, required=False)
    roots = []
    raw_roots = data.get("trust_roots") or []
    if not isinstance(raw_roots, list):
        c.add(("trust_roots",), "must be a list of certificate file paths")
        raw_roots = []
    for i, _ in enumerate(raw_roots):
        root = _safe_path(c, dict(enumerate(raw_roots)), i, variables, ("trust_roots",))
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
    revoke = _bool(c, data, "acme_revoke_on_offboard", (), True)
    parallel = data.get("acme_max_parallel_orders", MAX_PARALLEL_ORDERS)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 16:
        c.add(("acme_max_parallel_orders",), "must be a number of orders from 1 to 16",
              f"Let's Encrypt asks for few at once: {MAX_PARALLEL_ORDERS} is the default")
        parallel = MAX_PARALLEL_ORDERS
    rate_limits = _rate_limits(c, data.get("acme_rate_limits"))
    caa_identity = _hostname(c, data, "acme_caa_identity", (), required=False)
    allow_private = _bool(c, data, "verify_allow_private", (), False)
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


def _rate_limits(c: _Collector, data: Any) -> tuple[RateLimit, ...]:
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
        exempt = _bool(c, value, "renewals_exempt", keypath, default.renewals_exempt)
        limits.append(RateLimit(default.kind, limit, float(hours), exempt))
    return tuple(limits)


def _check_secret_file(c: _Collector, path: Path, keypath: tuple, lab: LabSettings | None) -> None:
    if not path.exists():
        if lab and path.is_relative_to(lab.dir):
            return  # `provisioner lab up` generates it
        c.add(keypath, f"file not found: {path}", "create it (mode 0600) or fix the path")
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        c.add(keypath, f"{path} is readable by group or others (mode {mode:04o})",
              f"run: chmod 600 {path}")


def _nameserver(c: _Collector, data: Any, prefix: tuple) -> Nameserver | None:
    if not isinstance(data, dict):
        c.add(prefix, "must be a mapping with name, address and port")
        return None
    c.unknown_keys(data, ("name", "address", "port"), prefix)
    name = _hostname(c, data, "name", prefix)
    address = _ip(c, data, "address", prefix)
    port = _port(c, data, "port", prefix, 53)
    if name and address:
        return Nameserver(name=name, address=address, port=port)
    return None


def _lab_settings(c: _Collector, data: Any, variables: dict[str, str]) -> LabSettings | None:
    if data is None:
        return None
    prefix = ("lab",)
    if not isinstance(data, dict):
        c.add(prefix, "must be a mapping")
        return None
    c.unknown_keys(data, ("dir", "ns1", "ns2", "acme", "acme_port", "pdns",
                          "production_hosts"), prefix)
    lab_dir = _safe_path(c, data, "dir", variables, prefix)
    ips = {key: _ip(c, data, key, prefix, 4) for key in ("ns1", "ns2", "acme")}
    pdns = _ip(c, data, "pdns", prefix, 4, required=False)
    for key, value in {**ips, "pdns": pdns}.items():
        if value and not ipaddress.ip_address(value).is_loopback:
            c.add((*prefix, key), "the lab only runs on loopback (127.0.0.0/8)")
            return None
    port = _port(c, data, "acme_port", prefix, 14000)
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


def _alert_settings(c: _Collector, data: Any, variables: dict[str, str],
                    lab: LabSettings | None) -> AlertSettings | None:
    if data is None:
        return None
    prefix = ("alerts",)
    if not isinstance(data, dict):
        c.add(prefix, "must be a mapping of channels: email, webhook, telegram")
        return None
    c.unknown_keys(data, ("email", "webhook", "telegram", "cert_days"), prefix)
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


def _backup_settings(c: _Collector, data: Any, variables: dict[str, str],
                     lab: LabSettings | None) -> BackupSettings | None:
    if data is None:
        return None
    prefix = ("backup",)
    if not _mapping(c, data, prefix, ("repository", "password_file", "retention")):
        return None
    before = len(c.problems)
    repository = _safe_path(c, data, "repository", variables, prefix)
    password_file = _safe_path(c, data, "password_file", variables, prefix)
    if password_file is not None:
        _check_secret_file(c, password_file, (*prefix, "password_file"), lab)
    retention = data.get("retention", {})
    kept: dict[str, int] = {}
    if _mapping(c, retention, (*prefix, "retention"), BACKUP_RETENTION_PERIODS):
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


def _mapping(c: _Collector, data: Any, prefix: tuple, keys: tuple[str, ...]) -> bool:
    if not isinstance(data, dict):
        c.add(prefix, "must be a mapping", f"keys: {', '.join(keys)}")
        return False
    c.unknown_keys(data, keys, prefix)
    return True


def _url(c: _Collector, data: dict, key: str, prefix: tuple, default: str | None = None) -> str | None:
    value = data.get(key, default)
    if not (isinstance(value, str) and URL_RE.match(value)):
        c.add((*prefix, key), "must be a plain http(s) URL", "e.g. https://example.go.id/hook")
        return None
    return value


def _emails(c: _Collector, data: dict, key: str, prefix: tuple, *,
            required: bool) -> tuple[str, ...]:
    value = data.get(key, [])
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or (required and not value) or \
            not all(isinstance(v, str) and EMAIL_RE.match(v) for v in value):
        c.add((*prefix, key), "must be a list of e-mail addresses",
              "e.g. [ops@paserkab.go.id]")
        return ()
    return tuple(value)


def _email_settings(c: _Collector, data: Any, prefix: tuple, variables: dict[str, str],
                    lab: LabSettings | None) -> EmailSettings | None:
    keys = ("host", "port", "security", "username", "password_file", "from", "to",
            "report_to", "ca_bundle")
    if not _mapping(c, data, prefix, keys):
        return None
    before = len(c.problems)
    host = data.get("host")
    if not (is_hostname(host) or _is_ip(host)):
        c.add((*prefix, "host"), f"not a host name or IP address: {host!r}")
    security = data.get("security", "starttls")
    if security not in SMTP_SECURITY:
        c.add((*prefix, "security"), f"unknown security {security!r}",
              "starttls (port 587) or tls (port 465)")
    port = _port(c, data, "port", prefix, 465 if security == "tls" else 587)
    username = c.text(data, "username", prefix, required=False)
    password_file = _safe_path(c, data, "password_file", variables, prefix,
                               required=username is not None)
    if password_file is not None:
        _check_secret_file(c, password_file, (*prefix, "password_file"), lab)
    sender = c.text(data, "from", prefix)
    if sender and not EMAIL_RE.match(sender):
        c.add((*prefix, "from"), f"not an e-mail address: {sender!r}")
    to = _emails(c, data, "to", prefix, required=True)
    report_to = _emails(c, data, "report_to", prefix, required=False)
    ca_bundle = _safe_path(c, data, "ca_bundle", variables, prefix, required=False)
    if len(c.problems) > before:
        return None
    return EmailSettings(host=str(host), port=port, security=security, username=username,
                         password_file=password_file, sender=sender, to=to,
                         report_to=report_to, ca_bundle=ca_bundle)


def _webhook_settings(c: _Collector, data: Any, prefix: tuple, variables: dict[str, str],
                      lab: LabSettings | None) -> WebhookSettings | None:
    if not _mapping(c, data, prefix, ("url",)):
        return None
    url = _url(c, data, "url", prefix)
    return WebhookSettings(url=url) if url else None


TELEGRAM_CHAT_RE = re.compile(r"^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")


def _telegram_settings(c: _Collector, data: Any, prefix: tuple, variables: dict[str, str],
                       lab: LabSettings | None) -> TelegramSettings | None:
    if not _mapping(c, data, prefix, ("api_base", "bot_token_file", "chat_id")):
        return None
    before = len(c.problems)
    api_base = _url(c, data, "api_base", prefix, "https://api.telegram.org")
    token_file = _safe_path(c, data, "bot_token_file", variables, prefix)
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


# --------------------------------------------------------------------------- hosts

def _load_hosts(path: Path, variables: dict[str, str]) -> tuple[dict[str, Host | None], list[Problem]]:
    """Every declared host; an invalid one maps to None (its problems are reported)."""
    data, lines = yamlsrc.load(path)
    c = _Collector(path, lines)
    hosts: dict[str, Host | None] = {}
    if not isinstance(data, dict) or not isinstance(data.get("all"), dict):
        c.add((), "must be an Ansible YAML inventory starting with 'all:'")
        return hosts, c.problems
    for name, host_vars, keypath in _walk_inventory(c, data["all"], ("all",), {}):
        hosts[name] = _host(c, name, host_vars, keypath, variables)
    if not hosts and not c.problems:
        c.add(("all",), "no hosts defined")
    return hosts, c.problems


def _walk_inventory(c: _Collector, group: Any, keypath: tuple, inherited: dict):
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


def _host(c: _Collector, name: str, data: dict, keypath: tuple,
          variables: dict[str, str]) -> Host | None:
    if not isinstance(data, dict):
        c.add(keypath, "host vars must be a mapping")
        return None
    before = len(c.problems)
    c.unknown_keys(data, HOST_KEYS, keypath)
    ssh_address = data.get("ansible_host", name)
    if not (is_hostname(str(ssh_address)) or _is_ip(ssh_address)):
        c.add((*keypath, "ansible_host"), f"not a host name or IP address: {ssh_address!r}")
    user = data.get("ansible_user", "root")
    if not isinstance(user, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        c.add((*keypath, "ansible_user"), "not a valid user name")
    ipv4 = _ip(c, data, "public_ipv4", keypath, 4)
    ipv6 = _ip(c, data, "public_ipv6", keypath, 6, required=False)
    fqdn = _hostname(c, data, "host_fqdn", keypath, required=False)
    key_file = _safe_path(c, data, "ansible_ssh_private_key_file", variables, keypath)
    nginx_binary = data.get("nginx_binary", "/usr/sbin/nginx")
    if not isinstance(nginx_binary, str) or UNSAFE_RE.search(nginx_binary) \
            or not nginx_binary.startswith("/"):
        c.add((*keypath, "nginx_binary"), "must be an absolute path without spaces or quotes")
    paths = {key: _safe_path(c, data, key, variables, keypath) for key in HOST_PATH_FIELDS}
    sshd = _sshd_settings(c, data, variables, keypath)
    port = _port(c, data, "ansible_port", keypath, 22)
    lab = _bool(c, data, "lab", keypath, False)
    if not _bool(c, data, "ansible_become", keypath, user != "root") and user != "root":
        c.add((*keypath, "ansible_become"), f"must be true: {user} is not root",
              hint="the host agent and the playbooks run as root through sudo")
    if len(c.problems) > before:
        return None
    return Host(
        name=name, ssh_address=str(ssh_address), ssh_port=port, ssh_user=user,
        ssh_key_file=key_file, public_ipv4=ipv4, public_ipv6=ipv6, fqdn=fqdn,
        nginx_binary=nginx_binary, lab=lab, sshd=sshd, **paths,
    )


def _sshd_settings(c: _Collector, data: dict, variables: dict[str, str],
                   keypath: tuple) -> SshdSettings:
    """Where the host's sshd takes provisioner's SFTP drop-in and keys (Debian's paths
    unless the host vars say otherwise)."""
    given = {field: _safe_path(c, data, var, variables, keypath, required=False)
             for var, field in access.SSHD_HOST_VARS.items()}
    return SshdSettings(**{field: PurePosixPath(path)
                                  for field, path in given.items() if path is not None})


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- agencies

def load_agency_file(path: Path, zone: str, hosts: dict[str, Host]) -> tuple[Agency | None, list[Problem]]:
    data, lines = yamlsrc.load(path)
    c = _Collector(path, lines)
    agency = _agency(c, data, path, zone, hosts)
    return (agency if not c.problems else None), c.problems


def validate_agency_data(data: Any, path: Path, zone: str,
                         hosts: dict[str, Host]) -> tuple[Agency | None, list[Problem]]:
    """Validate agency data that did not come from a file (CSV import)."""
    c = _Collector(path, {})
    agency = _agency(c, data, path, zone, hosts)
    return (agency if not c.problems else None), c.problems


def _agency(c: _Collector, data: Any, path: Path, zone: str, hosts: dict[str, Host]) -> Agency | None:
    if not isinstance(data, dict):
        c.add((), "an agency file must be a mapping of fields")
        return None
    c.unknown_keys(data, AGENCY_REQUIRED + AGENCY_OPTIONAL)
    slug = data.get("slug")
    if slug is None:
        c.add(("slug",), "missing")
    elif not isinstance(slug, str) or not LABEL_RE.match(slug):
        c.add(("slug",), f"not a valid DNS label: {slug!r}",
              "lowercase letters, digits and hyphens, 1-63 characters, no leading/trailing hyphen")
        slug = None
    elif slug != path.stem:
        c.add(("slug",), f"does not match the file name {path.name!r}",
              f"rename the file to {slug}.yml or fix the slug")
    subdomain = data.get("subdomain", slug)
    if "subdomain" in data and (not isinstance(subdomain, str) or not LABEL_RE.match(subdomain)):
        c.add(("subdomain",), f"not a valid DNS label: {subdomain!r}",
              "lowercase letters, digits and hyphens, 1-63 characters")
        subdomain = None
    fqdn = f"{subdomain}.{zone}" if subdomain else None
    if fqdn and len(fqdn) > 253:
        c.add(("subdomain",), "the full name is longer than 253 characters")
    host, external = _placement(c, data, hosts)
    record_type = data.get("record_type", "A")
    if record_type not in RECORD_TYPES:
        c.add(("record_type",), f"unknown record type {record_type!r}", "A or CNAME")
    elif record_type == "CNAME" and host and hosts[host] and not hosts[host].fqdn:
        c.add(("record_type",), f"CNAME needs host_fqdn on host {host!r} in hosts.yml")
    status = data.get("status", "active")
    if status not in ("active", "offboarded"):
        c.add(("status",), f"unknown status {status!r}", "active or offboarded")

    # The rest describes the site we render: an agency hosted elsewhere needs only its
    # slug, name and external URL (what it gives is still checked).
    ours = "external" not in data
    name = c.text(data, "name")
    texts = {key: c.text(data, key, required=ours) or "" for key in ("address", "phone")}
    short_name = c.text(data, "short_name", required=ours) or name
    description = c.text(data, "description", required=False, multiline=True) or ""
    maklumat = c.text(data, "maklumat", multiline=True, required=ours) or ""
    email = c.text(data, "email", required=ours) or ""
    if email and not EMAIL_RE.match(email):
        c.add(("email",), f"not an e-mail address: {email!r}")
    hours = c.paragraphs(data, "opening_hours", required=ours) or ()
    head = _head(c, data.get("head")) if ours or "head" in data else None
    channels = _channels(c, data.get("complaint_channels"))
    services = _services(c, data.get("services")) if ours or "services" in data else ()
    sample = _bool(c, data, "sample", (), False)
    content_keys = _content_access(c, data.get("content_access"), ours)
    if c.problems:
        return None
    return Agency(
        slug=slug, subdomain=subdomain, fqdn=fqdn, host=host, external_url=external,
        description=description, email=email, opening_hours=hours, head=head,
        maklumat=maklumat, complaint_channels=channels, services=services, sample=sample,
        offboarded=status == "offboarded", record_type=record_type, source=path, name=name,
        short_name=short_name, content_access=content_keys, **texts,
    )


def _content_access(c: _Collector, data: Any, ours: bool) -> tuple[str, ...]:
    """``content_access: {keys: [...]}``: the agency's SFTP keys, as canonical lines."""
    if data is None:
        return ()
    if not ours:
        c.add(("content_access",), "only for an agency hosted here",
              "remove it, or replace 'external' with 'host'")
        return ()
    if not _mapping(c, data, ("content_access",), ("keys",)):
        return ()
    keys, problems = access.parse_keys(data.get("keys", []))
    for where, message in problems:
        c.add(("content_access", "keys", *where), message,
              "paste one line of the staff member's .pub file (ssh-keygen -t ed25519)")
    return tuple(key.line for key in keys)


def _placement(c: _Collector, data: dict, hosts: dict[str, Host]) -> tuple[str | None, str | None]:
    host, external = data.get("host"), data.get("external")
    if (host is None) == (external is None):
        c.add(("host",), "exactly one of 'host' or 'external' is required",
              "host: web1 (hosted here) or external: https://... (hosted elsewhere)")
        return None, None
    if host is not None:
        if not isinstance(host, str) or host not in hosts:
            known = ", ".join(sorted(hosts)) or "none"
            c.add(("host",), f"unknown host {host!r}", f"hosts in hosts.yml: {known}")
            return None, None
        return host, None
    if not isinstance(external, str) or not URL_RE.match(external):
        c.add(("external",), f"not a plain http(s) URL: {external!r}",
              "e.g. https://example.paserkab.go.id/")
        return None, None
    return None, external


def _head(c: _Collector, data: Any) -> Head | None:
    if not isinstance(data, dict):
        c.add(("head",), "missing or not a mapping", "head: {name: ..., title: ...}")
        return None
    c.unknown_keys(data, ("name", "title"), ("head",))
    name = c.text(data, "name", ("head",))
    title = c.text(data, "title", ("head",))
    return Head(name=name, title=title) if name and title else None


def _channels(c: _Collector, data: Any) -> tuple[ComplaintChannel, ...]:
    lapor = ComplaintChannel(LAPOR_CHANNEL_NAME, "https://www.lapor.go.id, SMS 1708",
                             "https://www.lapor.go.id")
    if data is None:
        return (lapor,)
    if not isinstance(data, list):
        c.add(("complaint_channels",), "must be a list of {name, contact, url}")
        return (lapor,)
    channels = []
    for i, item in enumerate(data):
        prefix = ("complaint_channels", i)
        if not isinstance(item, dict):
            c.add(prefix, "must be a mapping with name and contact")
            continue
        c.unknown_keys(item, ("name", "contact", "url"), prefix)
        name = c.text(item, "name", prefix)
        contact = c.text(item, "contact", prefix)
        url = item.get("url")
        if url is not None and not (isinstance(url, str) and URL_RE.match(url)):
            c.add((*prefix, "url"), f"not a plain http(s) URL: {url!r}")
            url = None
        if name and contact:
            channels.append(ComplaintChannel(name, contact, url))
    if not any(ch.name == LAPOR_CHANNEL_NAME for ch in channels):
        channels.insert(0, lapor)
    return tuple(channels)


def _services(c: _Collector, data: Any) -> tuple[Service, ...]:
    if not isinstance(data, list) or not data:
        c.add(("services",), "must be a non-empty list of services",
              "every agency publishes at least one service standard")
        return ()
    services, seen = [], set()
    allowed = ("name", *DELIVERY_COMPONENTS, *SERVICE_OPTIONAL)
    for i, item in enumerate(data):
        prefix = ("services", i)
        if not isinstance(item, dict):
            c.add(prefix, "must be a mapping with a name and the six components")
            continue
        c.unknown_keys(item, allowed, prefix)
        name = c.text(item, "name", prefix)
        slug = item.get("slug") or (slugify(name) if name else None)
        if slug is not None and (not isinstance(slug, str) or not LABEL_RE.match(slug)):
            c.add((*prefix, "slug"), f"not a valid page name: {slug!r}",
                  "lowercase letters, digits and hyphens")
            slug = None
        if slug in seen:
            c.add((*prefix, "slug" if "slug" in item else "name"),
                  f"two services share the page name {slug!r}", "give one a distinct slug")
        seen.add(slug)
        components = {key: c.paragraphs(item, key, prefix) for key in DELIVERY_COMPONENTS}
        management = {key: c.paragraphs(item, key, prefix, required=False)
                      for key in MANAGEMENT_COMPONENTS if key in item}
        description = c.text(item, "description", prefix, required=False, multiline=True) or ""
        if name and slug and all(components.values()) and all(management.values()):
            services.append(Service(name=name, slug=slug, description=description,
                                    components=components, management=management))
    return tuple(services)


# --------------------------------------------------------------------------- inventory

def load_inventory(inventory_dir: Path, state_dir: Path | None = None, *,
                   placement_only: bool = False) -> Inventory:
    """Load and validate the whole inventory; raise InputError with every problem found.

    ``placement_only``: every file is validated alike, but each agency keeps only where
    and how it is served (slug, names, host or external URL, record type, status), not
    what its site shows: a sweep of 10,000 agencies holds ~5 MB of them, not ~70 MB."""
    inventory_dir = Path(inventory_dir).resolve()
    state_dir = Path(state_dir).resolve() if state_dir else default_state_dir(inventory_dir)
    problems: list[Problem] = []
    if not inventory_dir.is_dir():
        raise InputError([Problem(inventory_dir, None, "inventory", "not a directory",
                                  "pass --inventory DIR or set PROVISIONER_INVENTORY")])
    variables = {"state_dir": str(state_dir), "inventory_dir": str(inventory_dir)}
    settings, hosts = None, {}
    for rel, loader in (("group_vars/all.yml", _load_settings), ("hosts.yml", _load_hosts)):
        path = inventory_dir / rel
        if not path.is_file():
            problems.append(Problem(path, None, "file", "missing",
                                    "run 'provisioner init DIR --zone ZONE' for a fresh inventory"))
            continue
        result, found = _guard(path, lambda p=path, f=loader: f(p, variables))
        problems += found
        if rel == "hosts.yml":
            hosts = result or {}
        else:
            settings = result
    agencies = _load_agencies(inventory_dir, settings, hosts, problems, placement_only)
    if problems:
        raise InputError(problems)
    assert settings is not None
    return Inventory(root=inventory_dir, state_dir=state_dir, settings=settings,
                     hosts={name: host for name, host in hosts.items() if host}, agencies=agencies)


def _load_agencies(inventory_dir: Path, settings: Settings | None, hosts: dict[str, Host],
                   problems: list[Problem], placement_only: bool = False) -> dict[str, Agency]:
    agency_dir = inventory_dir / "agencies"
    agencies: dict[str, Agency] = {}
    if not agency_dir.is_dir():
        problems.append(Problem(agency_dir, None, "agencies", "folder missing"))
        return agencies
    zone = settings.zone if settings else "invalid"
    by_fqdn: dict[str, Path] = {}
    for path in sorted(agency_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix not in (".yml", ".yaml"):
            problems.append(Problem(path, None, "file", "not a .yml file",
                                    "agency files are agencies/<slug>.yml"))
            continue
        agency, found = _guard(path, lambda p=path: load_agency_file(p, zone, hosts))
        problems += found
        if agency is None:
            continue
        if agency.slug in agencies:
            problems.append(Problem(path, None, "slug", f"duplicate slug {agency.slug!r}",
                                    f"also in {agencies[agency.slug].source.name}"))
        elif agency.fqdn in by_fqdn:
            problems.append(Problem(path, None, "subdomain", f"duplicate subdomain {agency.subdomain!r}",
                                    f"also used by {by_fqdn[agency.fqdn].name}"))
        else:
            agencies[agency.slug] = placement_of(agency) if placement_only else agency
            by_fqdn[agency.fqdn] = path
    return agencies


def placement_of(agency: Agency) -> Agency:
    """The agency without what its site shows (a sweep needs only where it is served)."""
    return dataclasses.replace(agency, description="", address="", phone="", email="",
                               opening_hours=(), head=None, maklumat="",
                               complaint_channels=(), services=())


def _guard(path: Path, load: Callable[[], tuple[Any, list[Problem]]]) -> tuple[Any, list[Problem]]:
    try:
        return load()
    except InputError as exc:
        return None, exc.problems
