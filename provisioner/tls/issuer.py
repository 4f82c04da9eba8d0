"""Certificates issued and installed for many agencies at once (the onboarding's and
renewal's TLS step):

* guardrails before any order (so a broken setup never burns the CA's limit of 5
  failed validations per name per hour): the name resolves to its host at every
  authoritative server, and a random file placed in the host's challenge webroot is
  fetched back over HTTP from the host's address with the agency's Host header;
* ``Issuer``: orders run concurrently, at most ``acme_max_parallel_orders`` in flight
  (one thread and one ACME client per order, acme.py), challenge files or TXT records
  are placed in one batch per host / per name, keys are installed 0600 on the hosts
  through the host agent; every order, certificate and failed validation goes to the
  rate-limit ledger (ratelimit.py), which the run's plan has already asked what fits;
* then the caller reloads each host once and asks served.py which serial it serves.

Modes (``settings.tls_mode``): ``http-01`` gives every agency its own certificate;
``dns-01-wildcard`` one ``*.zone`` + ``zone`` certificate for every host, validated
with TXT records through the DNS client's signed updates.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..dns.client import DnsClient, Expectation, Operation, UpdateBatch
from ..errors import DNSError, HostError, ProvisionerError
from ..hosts.agent import HostClient, RemoteFile
from ..plan import Outcome
from ..registry.models import Host, Inventory, Nameserver
from ..site import render as site
from ..verify.http import ProbeFailure, request_once
from . import acme, ratelimit
from .certs import CertInfo, CertTarget, cert_info, make_record, write_record
from .parallel import parallel

HTTP_PROBE_TIMEOUT = 5.0


# =========================================================================== guardrails


def addresses_at(dns: DnsClient, server: Nameserver, name: str, rdtype: str) -> tuple[str, ...]:
    """What one authoritative server answers for name (following the CNAMEs it gives)."""
    return dns.query(server, name, rdtype).addresses


def dns_problem(dns: DnsClient, servers: Sequence[Nameserver], name: str,
                host: Host) -> str | None:
    """None when every authoritative server points ``name`` at ``host`` (IPv4 and IPv6)."""
    wanted = {"A": (host.public_ipv4,), "AAAA": (host.public_ipv6,) if host.public_ipv6 else ()}
    try:
        for server in servers:
            for rdtype, expected in wanted.items():
                got = addresses_at(dns, server, name, rdtype)
                if tuple(sorted(got)) != tuple(sorted(expected)):
                    shown = ", ".join(got) or "nothing"
                    return (f"{server.name} answers {rdtype} {shown} for {name}, expected "
                            f"{', '.join(expected) or 'nothing'} (host {host.name})")
    except DNSError as exc:
        return f"cannot check DNS: {exc}"
    return None


def http_problem(address: str, name: str, token: str, content: bytes) -> str | None:
    """Fetch the probe file from the host's address with the agency's Host header (never
    via the system resolver) and compare its content; None when it matches."""
    where = f"http://{name}/.well-known/acme-challenge/ on {address}"
    try:
        response = request_once("GET", f"http://{address}/.well-known/acme-challenge/{token}",
                                timeout=HTTP_PROBE_TIMEOUT, headers={"Host": name})
    except ProbeFailure as failure:
        return f"cannot fetch {where}: {failure.detail}"
    if response.status != 200:
        return f"{where} answered {response.status}, not the probe file (is the vhost deployed?)"
    if response.body != content:
        return f"{where} served other content than the probe file"
    return None


# =========================================================================== issuing


@dataclass(frozen=True)
class Issued:
    target: CertTarget
    fullchain: bytes
    key: bytes = field(repr=False)
    info: CertInfo


@dataclass(frozen=True)
class CertResult:
    key: str
    status: str  # changed, ok, failed
    reason: str
    info: CertInfo | None = None
    target: CertTarget | None = None

    def outcomes(self) -> list[Outcome]:
        agencies = self.target.agencies if self.target else (self.key,)
        detail = self.reason if self.info is None else \
            f"{self.reason} (serial {self.info.serial_hex}, until {self.info.not_after:%Y-%m-%d})"
        return [Outcome(slug, "tls", self.status, detail) for slug in agencies]


class Issuer:
    """Orders, validates and installs certificates for many targets at once.

    ``hosts``: connected ``HostClient`` per host name (challenge files, installs);
    ``dns``: the zone's ``DnsClient`` (guardrail queries, DNS-01 TXT records).
    """

    def __init__(self, inventory: Inventory, hosts: Mapping[str, HostClient], dns: DnsClient,
                 account: acme.AcmeAccount | None = None, ledger: ratelimit.Ledger | None = None):
        self.inventory = inventory
        self.hosts = hosts
        self.dns = dns
        self.account = account or acme.AcmeAccount(inventory.settings, inventory.state_dir)
        self.ledger = ledger or open_ledger(inventory)

    # ------------------------------------------------------------------ guardrails

    def guard(self, targets: Sequence[CertTarget]) -> dict[str, str]:
        """Pre-order checks; target key -> problem for every target that must not be ordered."""
        problems: dict[str, str] = {}
        http = [t for t in targets if t.challenge == "http-01"]
        if http:
            try:
                servers = self.dns.authoritative_servers()
            except DNSError as exc:
                return {t.key: f"cannot check DNS: {exc}" for t in targets}
            found = parallel(lambda t: dns_problem(self.dns, servers, t.names[0],
                                                   self.inventory.hosts[t.installs[0].host]),
                             http)
            problems.update({t.key: problem for t, problem in zip(http, found) if problem})
        problems.update(self._probe_http([t for t in http if t.key not in problems]))
        if any(t.challenge == "dns-01" for t in targets):
            try:
                self.dns.check_update_access()
            except DNSError as exc:
                problems.update({t.key: f"cannot publish TXT records: {exc}"
                                 for t in targets if t.challenge == "dns-01"})
        return problems

    def _probe_http(self, targets: Sequence[CertTarget]) -> dict[str, str]:
        """Place one random file per target (one write per host), fetch each back, remove."""
        probes = {t.key: (secrets.token_urlsafe(24), secrets.token_bytes(16).hex().encode())
                  for t in targets}
        files = self._challenge_files({t: [probes[t.key]] for t in targets})

        def check(target: CertTarget) -> str | None:
            host = self.inventory.hosts[target.installs[0].host]
            token, content = probes[target.key]
            return http_problem(host.public_ipv4, target.names[0], token, content)

        try:
            problems = self._place(files, targets)
            reachable = [t for t in targets if t.key not in problems]
            found = parallel(check, reachable)
        finally:
            self._remove(files)
        problems.update({t.key: problem for t, problem in zip(reachable, found) if problem})
        return problems

    # ------------------------------------------------------------------ orders

    def issue(self, targets: Sequence[CertTarget]) -> tuple[list[Issued], dict[str, str]]:
        """Guard, then order, validate and finalize at most ``acme_max_parallel_orders``
        at a time: (issued, key -> problem)."""
        problems = self.guard(targets)
        wanted = [t for t in targets if t.key not in problems]
        size = self.account.acme.max_parallel_orders
        issued: list[Issued] = []
        for start in range(0, len(wanted), size):
            done, failed = self._issue_batch(wanted[start:start + size])
            issued += done
            problems.update(failed)
        return issued, problems

    def _issue_batch(self, wanted: Sequence[CertTarget]) -> tuple[list[Issued], dict[str, str]]:
        """Orders in flight together: one challenge write per host, one TXT update."""
        problems: dict[str, str] = {}
        orders, failed = _split(parallel(self._start_order, wanted, len(wanted)), wanted)
        problems.update(failed)
        files = self._challenge_files({o.target: o.challenge_files()
                                       for o in orders if o.target.challenge == "http-01"})
        txt = [o for o in orders if o.target.challenge == "dns-01"]
        try:
            problems.update(self._place(files, [o.target for o in orders]))
            problems.update(self._publish_txt(txt))
            ready = [o for o in orders if o.target.key not in problems]
            issued, failed = _split(parallel(self._finish_order, ready, len(wanted)),
                                    [o.target for o in ready])
            problems.update(failed)
        finally:
            self._remove(files)
            self._withdraw_txt(txt)
        return issued, problems

    def _start_order(self, target: CertTarget) -> acme.Order:
        return acme.start_order(self.account, target, self.ledger)

    def _finish_order(self, order: acme.Order) -> Issued:
        fullchain = acme.finish_order(order, self.ledger)
        info = cert_info(fullchain)
        self.ledger.record_certificate(order.target.names)
        return Issued(target=order.target, fullchain=fullchain, key=acme.key_pem(order.key),
                      info=info)

    # ------------------------------------------------------------------ challenge files and records

    def _challenge_files(self, tokens: Mapping[CertTarget, list[tuple[str, bytes]]]
                         ) -> dict[str, list[RemoteFile]]:
        """Host -> files to place in its challenge webroot."""
        files: dict[str, list[RemoteFile]] = {}
        for target, pairs in tokens.items():
            host = self.inventory.hosts[target.installs[0].host]
            folder = site.acme_challenge_dir(host)
            files.setdefault(host.name, []).extend(
                RemoteFile(folder / token, content, 0o644, host.acme_webroot)
                for token, content in pairs)
        return files

    def _place(self, files: Mapping[str, list[RemoteFile]], targets: Sequence[CertTarget]
               ) -> dict[str, str]:
        """One write per host, hosts in parallel; target key -> problem where it failed."""
        hosts = list(files)
        failed = {host: str(done) for host, done in zip(hosts, parallel(
            lambda host: self.hosts[host].write_files(files[host]), hosts))
                  if isinstance(done, ProvisionerError)}
        return {t.key: f"cannot place challenge files: {failed[t.installs[0].host]}"
                for t in targets if t.challenge == "http-01" and t.installs[0].host in failed}

    def _remove(self, files: Mapping[str, list[RemoteFile]]) -> None:
        """Best effort: a token left behind is harmless (random name, no secret)."""
        parallel(lambda host: self.hosts[host].remove_files(f.path for f in files[host]),
                 list(files))

    def _txt_values(self, orders: Sequence[acme.Order]) -> dict[str, tuple[str, ...]]:
        """Validation name -> TXT values (a wildcard + apex order needs two at one name)."""
        values: dict[str, list[str]] = {}
        for order in orders:
            for name, validation in order.txt_records():
                values.setdefault(name, []).append(f'"{validation}"')
        return {name: tuple(sorted(v)) for name, v in values.items()}

    def _publish_txt(self, orders: Sequence[acme.Order]) -> dict[str, str]:
        """One signed update for every TXT record, then wait until every server serves it."""
        if not orders:
            return {}
        values = self._txt_values(orders)
        ttl = 60
        batch = UpdateBatch(self.inventory.settings.zone, (), tuple(
            Operation("replace", name, "TXT", ttl, v) for name, v in values.items()))
        try:
            self.dns.update(batch)
            serial = self.dns.soa_serial()
            self.dns.wait_for_propagation(
                [Expectation(name, "TXT", v) for name, v in values.items()], serial)
        except DNSError as exc:
            return {o.target.key: f"cannot publish the DNS-01 TXT records: {exc}" for o in orders}
        return {}

    def _withdraw_txt(self, orders: Sequence[acme.Order]) -> None:
        if not orders:
            return
        batch = UpdateBatch(self.inventory.settings.zone, (), tuple(
            Operation("delete", name, "TXT") for name in self._txt_values(orders)))
        try:
            self.dns.update(batch)
        except DNSError:
            pass  # a stale challenge TXT is harmless; the next order replaces it

    # ------------------------------------------------------------------ install

    def install(self, issued: Sequence[Issued]) -> dict[str, str]:
        """Write key (0600) and chain of every certificate, one write per host; no reload.

        Returns target key -> problem for the installs that failed."""
        per_host: dict[str, list[tuple[str, RemoteFile]]] = {}
        for item in issued:
            for place in item.target.installs:
                root = self.inventory.hosts[place.host].tls_dir
                per_host.setdefault(place.host, []).extend([
                    (item.target.key, RemoteFile(place.key, item.key, 0o600, root)),
                    (item.target.key, RemoteFile(place.fullchain, item.fullchain, 0o644, root)),
                ])
        problems = {}
        for host, entries in per_host.items():
            try:
                self.hosts[host].write_files([f for _key, f in entries])
            except HostError as exc:
                problems.update({key: f"install on {host} failed: {exc}" for key, _f in entries})
        return problems

    def obtain(self, targets: Sequence[CertTarget], now: dt.datetime | None = None
               ) -> list[CertResult]:
        """Issue and install every target and record it on the controller (no reload:
        the caller reloads each host once, then checks ``served_serial``)."""
        issued, problems = self.issue(targets)
        problems.update(self.install([i for i in issued if i.target.key not in problems]))
        now = now or dt.datetime.now(dt.timezone.utc)
        results = []
        for target in targets:
            item = next((i for i in issued if i.target.key == target.key), None)
            if target.key in problems or item is None:
                results.append(CertResult(target.key, "failed",
                                          problems.get(target.key, "not issued"), None, target))
                continue
            write_record(self.inventory.state_dir,
                         make_record(target, item.info, self.account.directory_url, now))
            results.append(CertResult(target.key, "changed", "issued and installed", item.info,
                                      target))
        return results


def open_ledger(inventory: Inventory, clock: ratelimit.Clock = ratelimit.utc_now
                ) -> ratelimit.Ledger:
    """The rate-limit ledger of the inventory's CA directory."""
    ca = inventory.settings.acme
    return ratelimit.Ledger(inventory.state_dir, ca.directory, ca.rate_limits, clock)


def _split(values: Sequence[Any], targets: Sequence[CertTarget]
           ) -> tuple[list[Any], dict[str, str]]:
    """(successful values, target key -> problem) from ``parallel``'s output."""
    good, problems = [], {}
    for target, value in zip(targets, values):
        if isinstance(value, ProvisionerError):
            problems[target.key] = str(value)
        else:
            good.append(value)
    return good, problems
