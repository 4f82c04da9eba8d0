"""Verify agency sites: DNS at every authoritative server, the http:// redirect, TLS on
the first hop, the HTTPS answer, and the website publication score.

``verify_target`` verifies one site and returns an ``AgencyResult`` (data, never prints).
A check that could not be run is ``error``, never ``fail``; one that does not apply is
``skip``. The names of the inventory's zone are looked up only at the zone's own
servers, and every connection goes to the address they gave, with the name as SNI and
Host header.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import UsageError
from ..registry.models import Agency, Inventory, Settings
from . import dns as dnscheck
from .content import ScoringRules, analyse_page, load_rules, publication_checks
from .crawl import read_publication
from .health import AddressGate
from .http import HttpClient, Site, check_redirect, content_result, https_checks, user_agent
from .model import (
    ACTIVE_CHECKS,
    CHECKS,
    NO_CERT,
    WEB_CHECKS,
    AgencyResult,
    CertExpiry,
    Check,
    CheckResult,
    Publication,
    Status,
    ip_literal,
    result,
    skipped,
)
from .tls import TLS_CHECKS, ProbeFailure, TlsContexts, failed_checks, make_contexts, tls_checks

__all__ = [
    "ACTIVE_CHECKS", "CHECKS", "AgencyResult", "CertExpiry", "Check", "CheckResult", "Publication",
    "Status", "Target", "VerifyContext", "agency_target", "make_context", "resolve_target",
    "url_target", "utc_now", "verify_site", "verify_target",
]

T = TypeVar("T")
HTTPS_CHECKS = ("https.status", "https.hsts", "https.headers", "https.content")
NO_HTTPS = "an http:// URL: no HTTPS to check"


@dataclass(frozen=True)
class Target:
    """One site to verify and what the inventory expects of it."""

    agency: str | None  # slug; None for a bare URL
    name: str  # host name for DNS, SNI and Host (or an IP address)
    https_url: str | None  # None: an http:// URL on a non-standard port
    http_url: str | None  # None: no standard http:// counterpart to check
    zone: str | None = None  # the inventory's zone, when the name lies in it
    expected: dnscheck.Expected | None = None

    @property
    def url(self) -> str:
        return self.https_url or self.http_url or ""

    @property
    def literal_address(self) -> str | None:
        return ip_literal(self.name)


class AddressLimiter:
    """At most N connections or queries at once to one destination address: many
    agencies share one web server, and a sweep must not flood it."""

    def __init__(self, per_address: int):
        self.per_address = per_address
        self._slots: dict[str, asyncio.Semaphore] = {}

    def __call__(self, address: str) -> asyncio.Semaphore:
        slot = self._slots.get(address)
        if slot is None:
            slot = self._slots[address] = asyncio.Semaphore(self.per_address)
        return slot


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run verifications on the standard library's event loop. Not on uvloop, although it
    costs less CPU: a connect cancelled at the wrong moment (a site's deadline, a silent
    server's shared verdict) can leave uvloop holding a transport on a file descriptor
    the system hands out again, and every later connection on that descriptor fails with
    "File descriptor N is used by transport" for the rest of the run (uvloop issue #653,
    fix not merged; seen here in the hostile-site sweep)."""
    with asyncio.Runner() as runner:
        return runner.run(coroutine)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class VerifyContext:
    """What every verification of one run shares: rules, SSL contexts, zone servers, limits.

    Build it inside the event loop that runs the verifications (it holds semaphores)."""

    rules: ScoringRules
    tls: TlsContexts
    nameservers: tuple[dnscheck.Server, ...]
    limit: AddressLimiter
    timeout: float = 5.0
    clock: Callable[[], dt.datetime] = utc_now
    zones: dnscheck.ZoneCache = field(default_factory=dnscheck.ZoneCache)
    gate: AddressGate | None = None  # the web servers' slots and health (verify.health)
    deadline: float = 0.0  # seconds for a whole site (verify.guard); 0: two timeouts
    http: HttpClient | None = None  # one HTTP session for the run (verify.http)
    dns: dnscheck.Querier = field(init=False)

    def __post_init__(self) -> None:
        self.dns = dnscheck.Querier(self.timeout, self.limit)
        self.gate = self.gate or AddressGate(self.limit.per_address, self.timeout)
        self.deadline = self.deadline or 2 * self.timeout
        self.http = self.http or HttpClient(self.tls, self.timeout)

    def fresh(self) -> VerifyContext:
        """The same settings with the zone cache emptied (for a retry)."""
        again = VerifyContext(self.rules, self.tls, self.nameservers, self.limit,
                              self.timeout, self.clock, gate=self.gate, deadline=self.deadline,
                              http=self.http)
        again.dns = self.dns
        return again

    async def close(self) -> None:
        self.dns.close()
        await self.http.close()


def make_context(settings: Settings | None, extra_roots: tuple[Path, ...] = (), *,
                 per_address: int = 8, timeout: float = 5.0,
                 rules: ScoringRules | None = None, deadline: float = 0.0) -> VerifyContext:
    """Trust: the system store, the inventory's trust_roots that exist (the lab writes
    Pebble's root when it starts) and every extra root given (which must exist).
    External agencies on inward addresses are refused unless the settings allow them."""
    roots = tuple(r for r in (settings.trust_roots if settings else ()) if r.is_file())
    servers = tuple(dnscheck.Server(ns.name, ns.address, ns.port)
                    for ns in (settings.nameservers if settings else ()))
    gate = AddressGate(per_address, timeout,
                       allow_inward=bool(settings and settings.verify_allow_private))
    tls = make_contexts(roots + tuple(extra_roots))
    return VerifyContext(rules=rules or load_rules(), tls=tls,
                         nameservers=servers, limit=AddressLimiter(per_address), timeout=timeout,
                         gate=gate, deadline=deadline,
                         http=HttpClient(tls, timeout,
                                         user_agent(settings.acme.contact if settings else None)))


# =========================================================================== targets

def agency_target(inventory: Inventory, agency: Agency) -> Target:
    """The site of an agency: its own name in the zone, or its external URL."""
    zone = inventory.settings.zone
    if agency.external_url:
        target = url_target(agency.external_url, inventory.settings)
        return Target(agency.slug, target.name, target.https_url, target.http_url, target.zone)
    host = inventory.hosts[agency.host]
    expected = (dnscheck.Expected("CNAME", host.fqdn) if agency.record_type == "CNAME"
                else dnscheck.Expected("A", host.public_ipv4,
                                       ip_literal(host.public_ipv6) if host.public_ipv6 else None))
    return Target(agency.slug, agency.fqdn, f"https://{agency.fqdn}/", f"http://{agency.fqdn}/",
                  zone, expected)


def url_target(url: str, settings: Settings | None) -> Target:
    """Any http(s) URL, an IP address with a port included (its DNS checks are skipped)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an agency slug or an http(s) URL: {url!r}",
                         hint="e.g. dinkes or https://dinkes.paserkab.go.id/")
    name = parts.hostname.lower().rstrip(".")
    path = parts.path or "/"
    default_port = parts.port is None
    other = "http" if parts.scheme == "https" else "https"
    counterpart = urlunsplit((other, parts.netloc, path, parts.query, "")) if default_port else None
    given = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    https_url, http_url = (given, counterpart) if parts.scheme == "https" else (counterpart, given)
    zone = settings.zone if settings and (name == settings.zone
                                          or name.endswith("." + settings.zone)) else None
    return Target(None, name, https_url, http_url, zone)


def resolve_target(inventory: Inventory | None, text: str) -> Target:
    """An agency slug, an agency's host name, or a URL."""
    if inventory:
        if text in inventory.agencies:
            return agency_target(inventory, inventory.agencies[text])
        by_name = {a.fqdn: a for a in inventory.agencies.values() if not a.external_url}
        if text.lower().rstrip(".") in by_name:
            return agency_target(inventory, by_name[text.lower().rstrip(".")])
    if "://" not in text:
        raise UsageError(f"unknown agency {text!r}",
                         hint="give a slug from 'provisioner registry list' or a full URL")
    target = url_target(text, inventory.settings if inventory else None)
    agency = next((a for a in (inventory.agencies.values() if inventory else ())
                   if a.fqdn == target.name and not a.external_url), None)
    if agency is not None and target.zone:
        return Target(agency.slug, target.name, target.https_url, target.http_url, target.zone,
                      agency_target(inventory, agency).expected)
    return target


# =========================================================================== verification

async def verify_target(target: Target, ctx: VerifyContext) -> AgencyResult:
    """Every check of one site, never raising for what the site or network does."""
    dns_outcome = await _check_dns(target, ctx)
    address = target.literal_address or dns_outcome.address
    checks: list[CheckResult] = list(dns_outcome.checks)
    if address is None:
        why = "not probed: the name has no address"
        checks += skipped(WEB_CHECKS, why) + skipped([f"publication.{i}" for i in ctx.rules.ids], why)
        return AgencyResult(target.agency, target.url, tuple(checks),
                            ctx.rules.nothing_published, NO_CERT)
    async with ctx.gate.enter(address, checks):
        if target.http_url:
            checks.append(await check_redirect(ctx.http, target.http_url, address,
                                               target.name))
        else:
            checks += skipped(["http.redirect"], "no standard http:// URL to check")
        web_checks, publication, cert = await _probe_site(target, address, ctx)
    return AgencyResult(target.agency, target.url, tuple(checks + web_checks), publication, cert)


async def _check_dns(target: Target, ctx: VerifyContext) -> dnscheck.DnsOutcome:
    if target.literal_address:
        return dnscheck.no_dns("an IP address: no DNS name to check")
    if target.zone and ctx.nameservers:
        zone = await ctx.zones.get(target.zone, lambda: dnscheck.inventory_zone(
            target.zone, ctx.nameservers, ctx.dns))
    else:
        zone = await ctx.zones.get(f"external {target.name}", lambda: dnscheck.external_zone(
            target.name, ctx.dns))
    return await dnscheck.check_name(target.name, zone, target.expected, ctx.dns)


async def _probe_site(target: Target, address: str,
                      ctx: VerifyContext) -> tuple[list[CheckResult], Publication, CertExpiry]:
    """The home page (its connection's handshake for the TLS checks), then the
    publication, over the site's kept-alive connection."""
    nothing = ctx.rules.nothing_published
    site = ctx.http.site(target.url, address, target.name)
    try:
        path, response = await site.get_following(urlsplit(target.url).path or "/")
        checks, cert = _tls_results(target, site, None, ctx)
        home = analyse_page(response.text(), ctx.rules)
        content = content_result(response, home, ctx.rules)  # judged once, used twice
        checks += (https_checks(path, response, content) if target.https_url
                   else skipped(HTTPS_CHECKS, NO_HTTPS))
        # an error, default, parked or empty home page publishes nothing: its site is not
        # crawled (a blank 50 MB page on every path would cost its whole deadline)
        publication = (await read_publication(site, path, home, ctx.rules)
                       if content.status is Status.PASS else nothing)
    except ProbeFailure as failure:
        checks, cert = _tls_results(target, site, failure, ctx)
        return checks + _unreadable(target, failure, ctx), nothing, cert
    finally:
        site.close()
    return checks + publication_checks(publication, ctx.rules), publication, cert


def _tls_results(target: Target, site: Site, failure: ProbeFailure | None,
                 ctx: VerifyContext) -> tuple[list[CheckResult], CertExpiry]:
    """The TLS checks from the site's handshake; without one, the failure that
    prevented it."""
    if not target.https_url:
        return _no_tls(), NO_CERT
    if site.handshake is None:
        return failed_checks(failure), NO_CERT
    return tls_checks(target.name, site.handshake, ctx.clock())


def _no_tls() -> list[CheckResult]:
    return skipped(TLS_CHECKS, "an http:// URL on a non-standard port: no HTTPS to check")


def _unreadable(target: Target, failure: ProbeFailure, ctx: VerifyContext) -> list[CheckResult]:
    """The HTTPS and publication checks of a site whose pages could not be read."""
    why = f"not read: {failure.detail}"
    https = ([result("https.status", failure.status, failure.detail)]
             + skipped(HTTPS_CHECKS[1:], why)) if target.https_url \
        else skipped(HTTPS_CHECKS, NO_HTTPS)
    return https + skipped([f"publication.{i}" for i in ctx.rules.ids], why)


def verify_site(inventory: Inventory | None, text: str, extra_roots: tuple[Path, ...] = (),
                timeout: float = 5.0, deadline: float = 0.0) -> AgencyResult:
    """Verify one agency (slug or name) or URL, synchronously (for the CLI), guarded
    (verify.guard): whatever the site does, a result within the deadline."""
    from .guard import verify_guarded  # it imports this module

    target = resolve_target(inventory, text)

    async def verify() -> AgencyResult:
        ctx = make_context(inventory.settings if inventory else None, extra_roots,
                           timeout=timeout, deadline=deadline)
        try:
            return (await verify_guarded(target, ctx))[0]
        finally:
            await ctx.close()

    return run(verify())
