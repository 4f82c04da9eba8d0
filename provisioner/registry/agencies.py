"""agencies/*.yml (and the CSV import's rows): one agency's placement, contact details
and service standards, validated field by field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import Problem
from ..lifecycle import access
from . import yamlsrc
from .fields import EMAIL_RE, LABEL_RE, URL_RE, Collector
from .models import (
    DELIVERY_COMPONENTS,
    LAPOR_CHANNEL_NAME,
    MANAGEMENT_COMPONENTS,
    RECORD_TYPES,
    Agency,
    ComplaintChannel,
    Head,
    Host,
    Service,
)

AGENCY_REQUIRED = (
    "slug", "name", "short_name", "address", "phone", "email",
    "opening_hours", "head", "maklumat", "services",
)
AGENCY_OPTIONAL = (
    "subdomain", "host", "external", "description", "complaint_channels",
    "sample", "status", "record_type", "content_access",
)
SERVICE_OPTIONAL = ("slug", "description", *MANAGEMENT_COMPONENTS)


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:63].rstrip("-") or "layanan"


def load_agency_file(path: Path, zone: str, hosts: dict[str, Host]) -> tuple[Agency | None, list[Problem]]:
    data, lines = yamlsrc.load(path)
    c = Collector(path, lines)
    agency = _agency(c, data, path, zone, hosts)
    return (agency if not c.problems else None), c.problems


def validate_agency_data(data: Any, path: Path, zone: str,
                         hosts: dict[str, Host]) -> tuple[Agency | None, list[Problem]]:
    """Validate agency data that did not come from a file (CSV import)."""
    c = Collector(path, {})
    agency = _agency(c, data, path, zone, hosts)
    return (agency if not c.problems else None), c.problems


def _agency(c: Collector, data: Any, path: Path, zone: str, hosts: dict[str, Host]) -> Agency | None:
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
    sample = c.flag(data, "sample", (), False)
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


def _content_access(c: Collector, data: Any, ours: bool) -> tuple[str, ...]:
    """``content_access: {keys: [...]}``: the agency's SFTP keys, as canonical lines."""
    if data is None:
        return ()
    if not ours:
        c.add(("content_access",), "only for an agency hosted here",
              "remove it, or replace 'external' with 'host'")
        return ()
    if not c.mapping(data, ("content_access",), ("keys",)):
        return ()
    keys, problems = access.parse_keys(data.get("keys", []))
    for where, message in problems:
        c.add(("content_access", "keys", *where), message,
              "paste one line of the staff member's .pub file (ssh-keygen -t ed25519)")
    return tuple(key.line for key in keys)


def _placement(c: Collector, data: dict, hosts: dict[str, Host]) -> tuple[str | None, str | None]:
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


def _head(c: Collector, data: Any) -> Head | None:
    if not isinstance(data, dict):
        c.add(("head",), "missing or not a mapping", "head: {name: ..., title: ...}")
        return None
    c.unknown_keys(data, ("name", "title"), ("head",))
    name = c.text(data, "name", ("head",))
    title = c.text(data, "title", ("head",))
    return Head(name=name, title=title) if name and title else None


def _channels(c: Collector, data: Any) -> tuple[ComplaintChannel, ...]:
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


def _services(c: Collector, data: Any) -> tuple[Service, ...]:
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
