"""TLS certificates from an ACME CA (the ``acme`` library) for the agencies' sites.

Layers, top to bottom:

* pure: certificate facts (``cert_info``), renewal decisions (``decide``), what to
  order for which agencies (``cert_targets``), the controller-side records;
* guardrails before any order (so a broken setup never burns the CA's limit of 5
  failed validations per name per hour): the name resolves to its host at every
  authoritative server, and a random file placed in the host's challenge webroot is
  fetched back over HTTP from the host's address with the agency's Host header;
* ``Issuer``: orders run concurrently, at most ``acme_max_parallel_orders`` in flight
  (one thread and one ACME client per order), challenge files or TXT records are
  placed in one batch per host / per name, keys (ECDSA P-256, made here, never logged)
  are installed 0600 on the hosts through hosts.py; every order, certificate and
  failed validation goes to the rate-limit ledger (ratelimit.py), which the run's plan
  has already asked what fits;
* etiquette: authorizations and orders are polled with backoff (``poll``: first after
  about a second, growing, capped, inside the order's deadline) and a ``Retry-After``
  the CA sends is honoured, on polls and on 429/503 refusals (``PatientNetwork``).
  Pebble 2.4 sends none, so unit tests feed real ``requests`` responses that do;
* ``served_serial``: after install and reload, which certificate a host serves.

Modes (``settings.tls_mode``): ``http-01`` gives every agency its own certificate;
``dns-01-wildcard`` one ``*.zone`` + ``zone`` certificate for every host, validated
with TXT records through dns.py's signed updates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import functools
import http.client
import json
import os
import secrets
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import josepy as jose
import requests
from acme import challenges, crypto_util, messages
from acme import client as acme_client
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..dns.client import DnsClient, Expectation, Operation, UpdateBatch
from ..errors import AcmeError, DNSError, HostError, ProvisionerError
from ..hosts.agent import HostClient, HostFacts, RemoteFile
from ..plan import Outcome
from ..registry.models import (
    RENEW_DAYS,
    AcmeSettings,
    Agency,
    Host,
    Inventory,
    Nameserver,
    Settings,
)
from ..safety.secrets import read_secret_file
from ..site import render as site
from . import ratelimit
from .names import name_matches

ORDER_TIMEOUT = 90.0  # seconds for one order: validation, finalization, download
# Seconds between polls of an authorization or order: the first after about a second,
# growing by half each time, capped; a longer Retry-After from the CA wins.
POLL_FIRST, POLL_GROWTH, POLL_MAX = 1.0, 1.5, 8.0
# A CA that answers 429 or 503 with a Retry-After this short is asked again (a few times);
# a longer wait ends the order with the time the CA gave.
BUSY_WAIT_MAX, BUSY_RETRIES = 30.0, 3
HTTP_PROBE_TIMEOUT = 5.0
HOST_PARALLEL = 16  # host round trips and HTTP probes at once
USER_AGENT = "provisioner (regency agency hosting)"
T = TypeVar("T")


# =========================================================================== certificate facts


@dataclass(frozen=True)
class CertInfo:
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    names: tuple[str, ...]  # subjectAltName DNS names
    issuer: str

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def cert_info(pem: bytes) -> CertInfo:
    """Serial, validity, names and issuer of the first certificate in a PEM chain."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ProvisionerError(f"not a PEM certificate: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(serial=cert.serial_number, not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc, names=names,
                    issuer=str(issuer[0].value) if issuer else cert.issuer.rfc4514_string())


def installed_certs(facts: HostFacts) -> dict[Path, CertInfo | None]:
    """The certificates a host's facts found (fullchain path -> leaf, None when absent)."""
    return {path: cert_info(pem.encode()) if pem else None for path, pem in facts.certs.items()}


# =========================================================================== renewal decisions (pure)


@dataclass(frozen=True)
class CertDecision:
    action: str  # "order" (none yet), "renew", "keep"
    reason: str
    renewal: bool = False  # "renew" of a certificate that has every name already (the CA's
    # rate limits may exempt it)


def renewal_due(not_after: dt.datetime, now: dt.datetime, days: int = RENEW_DAYS) -> bool:
    """Renew when the certificate expires within ``days`` days (or already has)."""
    return not_after - now <= dt.timedelta(days=days)


def decide(cert: CertInfo | None, names: Sequence[str], now: dt.datetime,
           days: int = RENEW_DAYS) -> CertDecision:
    """Whether a certificate for ``names`` must be ordered, renewed or kept."""
    if cert is None:
        return CertDecision("order", "no certificate installed")
    missing = [n for n in names if not name_matches(n, cert.names)]
    if missing:
        return CertDecision("renew", f"does not cover {', '.join(missing)}")
    if cert.not_after <= now:
        return CertDecision("renew", f"expired on {cert.not_after:%Y-%m-%d}", renewal=True)
    if renewal_due(cert.not_after, now, days):
        return CertDecision("renew", f"expires in {cert.days_left(now):.0f} days "
                                     f"(renewing within {days})", renewal=True)
    return CertDecision("keep", f"valid until {cert.not_after:%Y-%m-%d} "
                                f"({cert.days_left(now):.0f} days left)")


# =========================================================================== what to order (pure)


@dataclass(frozen=True)
class Install:
    """Where one certificate goes on one host."""

    host: str
    fullchain: Path
    key: Path


@dataclass(frozen=True)
class CertTarget:
    """One certificate to have: its names, how it is validated, where it is installed."""

    key: str  # agency slug, or "wildcard.<zone>"
    names: tuple[str, ...]
    challenge: str  # "http-01" or "dns-01"
    installs: tuple[Install, ...]
    agencies: tuple[str, ...]


def wildcard_key(zone: str) -> str:
    return f"wildcard.{zone}"


def cert_targets(inventory: Inventory, agencies: Sequence[Agency]) -> list[CertTarget]:
    """The certificates the hosted ``agencies`` need in the inventory's TLS mode."""
    hosted = [a for a in agencies if a.hosted]
    settings = inventory.settings
    if settings.tls_mode == "dns-01-wildcard":
        if not hosted:
            return []
        installs = {}
        for agency in hosted:
            host = inventory.hosts[agency.host]
            paths = site.cert_paths(agency, host, settings)
            installs[host.name] = Install(host.name, paths.fullchain, paths.key)
        return [CertTarget(key=wildcard_key(settings.zone),
                           names=(f"*.{settings.zone}", settings.zone), challenge="dns-01",
                           installs=tuple(installs[h] for h in sorted(installs)),
                           agencies=tuple(a.slug for a in hosted))]
    targets = []
    for agency in hosted:
        host = inventory.hosts[agency.host]
        paths = site.cert_paths(agency, host, settings)
        targets.append(CertTarget(key=agency.slug, names=(agency.fqdn,), challenge="http-01",
                                  installs=(Install(host.name, paths.fullchain, paths.key),),
                                  agencies=(agency.slug,)))
    return targets


# =========================================================================== controller records


@dataclass(frozen=True)
class CertRecord:
    """What the controller remembers of an issued certificate (no key material)."""

    key: str
    names: tuple[str, ...]
    serial: str  # hex
    not_before: str  # ISO 8601, UTC
    not_after: str
    issuer: str
    hosts: tuple[str, ...]
    agencies: tuple[str, ...]
    issued_at: str
    directory: str

    @property
    def not_after_time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.not_after)


def records_dir(state_dir: Path) -> Path:
    return state_dir / "certs"


def make_record(target: CertTarget, info: CertInfo, directory: str,
                now: dt.datetime) -> CertRecord:
    return CertRecord(key=target.key, names=info.names, serial=info.serial_hex,
                      not_before=info.not_before.isoformat(), not_after=info.not_after.isoformat(),
                      issuer=info.issuer, hosts=tuple(i.host for i in target.installs),
                      agencies=target.agencies, issued_at=now.isoformat(timespec="seconds"),
                      directory=directory)


def write_record(state_dir: Path, record: CertRecord) -> Path:
    folder = records_dir(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{record.key}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_records(state_dir: Path) -> list[CertRecord]:
    """Every record, by key; unreadable files are reported, not skipped silently."""
    records = []
    for path in sorted(records_dir(state_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            records.append(CertRecord(**{**data, "names": tuple(data["names"]),
                                         "hosts": tuple(data["hosts"]),
                                         "agencies": tuple(data["agencies"])}))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ProvisionerError(f"{path}: not a certificate record ({exc})",
                                   hint="delete it; 'provisioner renew' writes it again") \
                from None
    return records


# =========================================================================== keys


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_secret(path: Path, data: bytes) -> None:
    """Create a 0600 file (mode set before any byte is written)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


# =========================================================================== ACME account


class AcmeAccount:
    """The ACME account: an ECDSA P-256 key in ``<state_dir>/acme/account.pem`` (0600)
    plus its registration, and a fresh client per thread (acme's client is sync and
    keeps per-connection nonces)."""

    def __init__(self, settings: Settings, state_dir: Path):
        self.acme = settings.acme
        self.dir = state_dir / "acme"
        self.key_file = self.dir / "account.pem"
        self.registration_file = self.dir / "registration.json"
        self._jwk: jose.JWKEC | None = None
        self._directory: messages.Directory | None = None
        self._regr: messages.RegistrationResource | None = None
        self._lock = threading.Lock()

    @property
    def directory_url(self) -> str:
        return self.acme.directory

    @property
    def jwk(self) -> jose.JWKEC:
        if self._jwk is None:
            if not self.key_file.exists():
                _write_secret(self.key_file, key_pem(new_private_key()))
            pem = read_secret_file(self.key_file, "ACME account key")
            key = serialization.load_pem_private_key(pem, password=None)
            self._jwk = jose.JWKEC(key=key)
        return self._jwk

    def _network(self) -> acme_client.ClientNetwork:
        return acme_network(self.acme, self.jwk, self._regr)

    def client(self) -> acme_client.ClientV2:
        """A registered client of its own for the calling thread."""
        with self._lock:
            if self._regr is None:
                self._register()
        return acme_client.ClientV2(self._directory, self._network())

    def _register(self) -> None:
        """Find or create the account (idempotent: an existing key gets its account back)."""
        with acme_call(self.directory_url):
            net = self._network()
            self._directory = acme_client.ClientV2.get_directory(self.directory_url, net)
            client = acme_client.ClientV2(self._directory, net)
            registration = messages.NewRegistration.from_data(
                email=self.acme.contact.removeprefix("mailto:"), terms_of_service_agreed=True)
            try:
                regr = client.new_account(registration)
            except acme_errors.ConflictError as exc:
                regr = messages.RegistrationResource(uri=exc.location, body=registration)
        self._regr = regr
        _write_secret(self.registration_file, (json.dumps(
            {"directory": self.directory_url, "uri": regr.uri,
             "contact": list(regr.body.contact)}, indent=2) + "\n").encode())


def acme_network(acme: AcmeSettings, jwk: jose.JWKEC | None = None,
                 account: messages.RegistrationResource | None = None) -> PatientNetwork:
    verify: Any = str(acme.ca_bundle) if acme.ca_bundle else True
    return PatientNetwork(jwk, account=account, alg=jose.ES256, verify_ssl=verify,
                          user_agent=USER_AGENT)


def fetch_directory(acme: AcmeSettings, net: PatientNetwork | None = None
                    ) -> messages.Directory:
    """The CA's directory (an AcmeError when it does not answer or lacks a resource)."""
    with acme_call(acme.directory):
        directory = acme_client.ClientV2.get_directory(acme.directory,
                                                       net or acme_network(acme))
        for resource in ("newNonce", "newAccount", "newOrder"):
            try:
                directory[resource]
            except KeyError:
                raise AcmeError(acme.directory, f"the directory has no {resource}",
                                hint="is acme_directory an ACME (RFC 8555) directory URL?") \
                    from None
    return directory


def existing_account(acme: AcmeSettings, key_file: Path) -> str | None:
    """The URL of the account the CA holds for the key in ``key_file``; None when the CA
    does not know the key. Reads only (onlyReturnExisting): nothing is registered."""
    pem = read_secret_file(key_file, "ACME account key")
    try:
        key = serialization.load_pem_private_key(pem, None)
    except (ValueError, TypeError) as exc:
        raise ProvisionerError(f"{key_file}: not an ACME account key ({exc})",
                               hint="restore the key from a backup, or move it aside: the "
                                    "next order registers a new account") from None
    net = acme_network(acme, jose.JWKEC(key=key))
    client = acme_client.ClientV2(fetch_directory(acme, net), net)
    with acme_call(acme.directory):
        try:
            return client.new_account(messages.NewRegistration(only_return_existing=True)).uri
        except acme_errors.ConflictError as exc:  # 200 + Location: the account exists
            return exc.location
        except messages.Error as exc:
            if exc.code == "accountDoesNotExist":
                return None
            raise


def retry_after_seconds(response: requests.Response,
                        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
                        ) -> float | None:
    """Seconds a response's ``Retry-After`` asks to wait (delay-seconds or an HTTP date),
    never negative; None when absent or unreadable.

    Not ``ClientV2.retry_after``: it adds the seconds to the local time but returns an HTTP
    date as naive UTC, and reads a zone offset as days."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value) if len(value) <= 9 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - now()).total_seconds())


class PatientNetwork(acme_client.ClientNetwork):
    """acme's network layer that honours ``Retry-After`` on refusals (429 rate limited,
    503 busy): a short wait is slept and the request sent again (a POST with a fresh
    nonce); a long one ends the call with the time the CA gave."""

    sleep = staticmethod(time.sleep)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.refusal_wait: float | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any
                      ) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self.refusal_wait = retry_after_seconds(response) \
            if response.status_code in (429, 503) else None
        return response

    def get(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self._patiently(super().get, *args, **kwargs)

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self._patiently(super().post, *args, **kwargs)

    def _patiently(self, call: Callable[..., requests.Response], url: str, *args: Any,
                   **kwargs: Any) -> requests.Response:
        retries = 0
        while True:
            self.refusal_wait = None
            try:
                return call(url, *args, **kwargs)
            except (messages.Error, acme_errors.ClientError) as exc:
                wait = self.refusal_wait
                if wait is None:
                    raise
                if wait > BUSY_WAIT_MAX or retries == BUSY_RETRIES:
                    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=wait)
                    detail = exc.detail if isinstance(exc, messages.Error) else "busy"
                    raise AcmeError(url, f"the CA refused ({detail}) and asks to retry after "
                                         f"{until:%Y-%m-%d %H:%M:%S} UTC") from None
                self.sleep(wait)
                retries += 1


@contextlib.contextmanager
def acme_call(target: str) -> Iterator[None]:
    """Every acme/requests failure inside becomes an ``AcmeError`` naming the target."""
    try:
        yield
    except ProvisionerError:
        raise
    except messages.Error as exc:
        raise AcmeError(target, f"the CA refused: {exc.detail or exc.code} ({exc.typ})") \
            from None
    except acme_errors.ValidationError as exc:
        raise AcmeError(target, f"validation failed: {validation_problems(exc)}") from None
    except acme_errors.Error as exc:
        raise AcmeError(target, f"{type(exc).__name__}: {exc}") from None
    except requests.exceptions.SSLError as exc:
        raise AcmeError(target, f"cannot verify the ACME API's certificate: {exc}",
                        hint="set acme_ca_bundle to the CA of the ACME API (lab: Pebble's)") \
            from None
    except (requests.exceptions.RequestException, OSError) as exc:
        raise AcmeError(target, f"cannot reach the ACME API: {exc}") from None


def validation_problems(exc: acme_errors.ValidationError) -> str:
    found = []
    for authzr in exc.failed_authzrs:
        for chall in authzr.body.challenges:
            if chall.error is not None:
                found.append(f"{authzr.body.identifier.value}: {chall.error.detail or chall.error}")
    return "; ".join(found) or "the CA gave no detail"


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
    connection = http.client.HTTPConnection(address, 80, timeout=HTTP_PROBE_TIMEOUT)
    try:
        connection.request("GET", f"/.well-known/acme-challenge/{token}", headers={"Host": name})
        response = connection.getresponse()
        body = response.read(len(content) + 1)
    except (OSError, http.client.HTTPException) as exc:
        return f"cannot fetch {where}: {exc}"
    finally:
        connection.close()
    if response.status != 200:
        return f"{where} answered {response.status}, not the probe file (is the vhost deployed?)"
    if body != content:
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


@dataclass
class _Order:
    """One order in flight: its own client, the challenges it answers."""

    target: CertTarget
    client: acme_client.ClientV2
    key: ec.EllipticCurvePrivateKey
    order: messages.OrderResource
    # (challenge, response, validation, identifier) per authorization
    challenges: list[tuple[messages.ChallengeBody, Any, str, str]]


class Issuer:
    """Orders, validates and installs certificates for many targets at once.

    ``hosts``: connected ``HostClient`` per host name (challenge files, installs);
    ``dns``: the zone's ``DnsClient`` (guardrail queries, DNS-01 TXT records).
    """

    def __init__(self, inventory: Inventory, hosts: Mapping[str, HostClient], dns: DnsClient,
                 account: AcmeAccount | None = None, ledger: ratelimit.Ledger | None = None):
        self.inventory = inventory
        self.hosts = hosts
        self.dns = dns
        self.account = account or AcmeAccount(inventory.settings, inventory.state_dir)
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
            found = _parallel(lambda t: dns_problem(self.dns, servers, t.names[0],
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
            found = _parallel(check, reachable)
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
        orders, failed = _split(_parallel(self._start_order, wanted, len(wanted)), wanted)
        problems.update(failed)
        files = self._challenge_files({o.target: [(c[0].chall.encode("token"), c[2].encode())
                                                  for c in o.challenges]
                                       for o in orders if o.target.challenge == "http-01"})
        txt = [o for o in orders if o.target.challenge == "dns-01"]
        try:
            problems.update(self._place(files, [o.target for o in orders]))
            problems.update(self._publish_txt(txt))
            ready = [o for o in orders if o.target.key not in problems]
            issued, failed = _split(_parallel(self._finish_order, ready, len(wanted)),
                                    [o.target for o in ready])
            problems.update(failed)
        finally:
            self._remove(files)
            self._withdraw_txt(txt)
        return issued, problems

    def _start_order(self, target: CertTarget) -> _Order:
        client = self.account.client()
        key = new_private_key()
        with acme_call(", ".join(target.names)):
            csr = crypto_util.make_csr(key_pem(key), list(target.names))
            order = client.new_order(csr)
            self.ledger.record_order(self.account.directory_url)
            wanted = challenges.HTTP01 if target.challenge == "http-01" else challenges.DNS01
            found = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA reuses a recent validation of this name: nothing to answer
                challb = next((c for c in authz.body.challenges if isinstance(c.chall, wanted)),
                              None)
                if challb is None:
                    raise AcmeError(authz.body.identifier.value,
                                    f"the CA offers no {target.challenge} challenge")
                response, validation = challb.response_and_validation(self.account.jwk)
                found.append((challb, response, validation, authz.body.identifier.value))
        return _Order(target, client, key, order, found)

    def _finish_order(self, order: _Order) -> Issued:
        client, target = order.client, order.target
        deadline = time.monotonic() + ORDER_TIMEOUT
        with acme_call(", ".join(target.names)):
            for challb, response, _validation, _name in order.challenges:
                client.answer_challenge(challb, response)
            for authzr in order.order.authorizations:
                final = poll(lambda a=authzr: client.poll(a),
                             lambda a: a.body.status not in (messages.STATUS_PENDING,
                                                             messages.STATUS_PROCESSING),
                             deadline)
                if final.body.status != messages.STATUS_VALID:
                    self.ledger.record_failures([final.body.identifier.value])
                    raise acme_errors.ValidationError([final])
            fullchain = self._finalize(client, order.order, deadline)
        info = cert_info(fullchain)
        self.ledger.record_certificate(target.names)
        return Issued(target=target, fullchain=fullchain, key=key_pem(order.key), info=info)

    @staticmethod
    def _finalize(client: acme_client.ClientV2, order: messages.OrderResource,
                  deadline: float) -> bytes:
        """Finalize, poll the order while it is processing (the responses' Retry-After
        honoured), download."""
        nonce_url = client.directory["newNonce"]

        def fetch(url: str, request: Any = None) -> tuple[messages.Order, requests.Response]:
            response = client.net.post(url, request, new_nonce_url=nonce_url)
            return messages.Order.from_json(response.json()), response

        def finished(body: messages.Order) -> bool:
            return body.status in (messages.STATUS_VALID, messages.STATUS_INVALID)

        body, response = fetch(order.body.finalize, messages.CertificateRequest(
            csr=x509.load_pem_x509_csr(order.csr_pem)))
        if not finished(body):
            body = poll(lambda: fetch(order.uri), finished, deadline,
                        first_wait=max(POLL_FIRST, retry_after_seconds(response) or 0.0))
        if body.status == messages.STATUS_INVALID or body.certificate is None:
            raise acme_errors.IssuanceError(body.error or messages.Error(detail="order invalid"))
        return client.net.post(body.certificate, None, new_nonce_url=nonce_url).text.encode()

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
        failed = {host: str(done) for host, done in zip(hosts, _parallel(
            lambda host: self.hosts[host].write_files(files[host]), hosts))
                  if isinstance(done, ProvisionerError)}
        return {t.key: f"cannot place challenge files: {failed[t.installs[0].host]}"
                for t in targets if t.challenge == "http-01" and t.installs[0].host in failed}

    def _remove(self, files: Mapping[str, list[RemoteFile]]) -> None:
        """Best effort: a token left behind is harmless (random name, no secret)."""
        _parallel(lambda host: self.hosts[host].remove_files(f.path for f in files[host]),
                  list(files))

    def _txt_values(self, orders: Sequence[_Order]) -> dict[str, tuple[str, ...]]:
        """Validation name -> TXT values (a wildcard + apex order needs two at one name)."""
        values: dict[str, list[str]] = {}
        for order in orders:
            for challb, _response, validation, name in order.challenges:
                values.setdefault(challb.chall.validation_domain_name(name), []).append(
                    f'"{validation}"')
        return {name: tuple(sorted(v)) for name, v in values.items()}

    def _publish_txt(self, orders: Sequence[_Order]) -> dict[str, str]:
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

    def _withdraw_txt(self, orders: Sequence[_Order]) -> None:
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


# =========================================================================== served certificate


@functools.lru_cache(maxsize=1)
def _compare_only_context() -> ssl.SSLContext:
    """No trust check: the served serial is compared with the one just issued."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_serial(address: str, port: int, sni: str, timeout: float = 5.0) -> int:
    """Serial of the certificate a server presents for ``sni``."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                _compare_only_context().wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise HostError(f"{address}:{port}", f"TLS handshake for {sni} failed: {exc}") from None
    return x509.load_der_x509_certificate(der).serial_number


def served_problems(inventory: Inventory, results: Sequence[CertResult]) -> dict[str, str]:
    """For every issued result: does each of its agencies' sites serve the new serial?

    Asked once, right after the reload: a reload returns only when no worker of the
    old config takes connections, so an old serial here is a real problem."""
    checks = [(slug, result.info.serial) for result in results
              if result.status == "changed" and result.info is not None and result.target
              for slug in result.target.agencies]

    def check(item: tuple[str, int]) -> str | None:
        slug, expected = item
        agency = inventory.agencies[slug]
        host = inventory.hosts[agency.host]
        try:
            serial = served_serial(host.public_ipv4, 443, agency.fqdn)
        except HostError as exc:
            return str(exc)
        return None if serial == expected else (
            f"{agency.fqdn} on {host.name} serves serial {serial:x}, not the new {expected:x}")

    found = _parallel(check, checks)
    return {slug: problem for (slug, _serial), problem in zip(checks, found) if problem}


# =========================================================================== listing


@dataclass(frozen=True)
class CertListing:
    """One certificate as 'provisioner certs' shows it (from a record or read on a host)."""

    key: str
    names: tuple[str, ...]
    host: str
    source: str  # "record" (controller) or "host" (read live)
    decision: CertDecision
    serial: str | None = None
    not_after: dt.datetime | None = None
    error: str | None = None

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {"key": self.key, "names": list(self.names), "host": self.host,
                "source": self.source, "serial": self.serial,
                "not_after": self.not_after.isoformat() if self.not_after else None,
                "days_left": round((self.not_after - now).total_seconds() / 86400, 1)
                if self.not_after else None,
                "status": listing_status(self), "reason": self.error or self.decision.reason}


def listing_status(listing: CertListing) -> str:
    if listing.error:
        return "error"
    return {"keep": "ok", "renew": "renew due", "order": "missing"}[listing.decision.action]


def recorded_certs(state_dir: Path, now: dt.datetime, days: int = RENEW_DAYS
                   ) -> list[CertListing]:
    """What the controller issued, from its records (fast: no host is contacted)."""
    listings = []
    for record in read_records(state_dir):
        info = CertInfo(int(record.serial, 16), dt.datetime.fromisoformat(record.not_before),
                        record.not_after_time, record.names, record.issuer)
        listings.append(CertListing(record.key, record.names, ", ".join(record.hosts), "record",
                                    decide(info, record.names, now, days), record.serial,
                                    record.not_after_time))
    return listings


def live_certs(inventory: Inventory, agencies: Sequence[Agency], now: dt.datetime,
               days: int = RENEW_DAYS) -> list[CertListing]:
    """What every host really has on disk for the agencies' certificates (one round trip
    per host, hosts in parallel); an unreachable host is listed with its error."""
    targets = cert_targets(inventory, agencies)
    hosts = sorted({i.host for t in targets for i in t.installs})

    def read(name: str) -> dict[Path, str | None]:
        paths = [i.fullchain for t in targets for i in t.installs if i.host == name]
        with HostClient(inventory.hosts[name], inventory.settings.known_hosts_file) as client:
            return client.certificates(paths)

    found = dict(zip(hosts, _parallel(read, hosts)))
    listings = []
    for target in targets:
        for place in target.installs:
            pems = found[place.host]
            if isinstance(pems, ProvisionerError):
                listings.append(CertListing(target.key, target.names, place.host, "host",
                                            CertDecision("order", "unknown"), error=str(pems)))
                continue
            listings.append(_host_listing(target, place, pems.get(place.fullchain), now, days))
    return listings


def _host_listing(target: CertTarget, place: Install, pem: str | None, now: dt.datetime,
                  days: int) -> CertListing:
    try:
        info = cert_info(pem.encode()) if pem else None
    except ProvisionerError as exc:
        return CertListing(target.key, target.names, place.host, "host",
                           CertDecision("renew", "unreadable"), error=f"{place.fullchain}: {exc}")
    if info is None:
        return CertListing(target.key, target.names, place.host, "host",
                           decide(None, target.names, now, days))
    return CertListing(target.key, info.names, place.host, "host",
                       decide(info, target.names, now, days), info.serial_hex, info.not_after)


# =========================================================================== helpers


def poll(fetch: Callable[[], tuple[T, requests.Response]], done: Callable[[T], bool],
         deadline: float, *, first_wait: float = POLL_FIRST,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> T:
    """Fetch until ``done``: the first fetch after ``first_wait``, then after a wait that
    grows from POLL_FIRST to POLL_MAX, or longer when the response's Retry-After says so;
    a wait that would end past ``deadline`` (a ``clock`` time) raises a timeout."""
    wait, step = first_wait, POLL_FIRST
    while True:
        if clock() + wait > deadline:
            raise acme_errors.TimeoutError()
        sleep(wait)
        value, response = fetch()
        if done(value):
            return value
        step = min(step * POLL_GROWTH, POLL_MAX)
        wait = max(step, retry_after_seconds(response) or 0.0)


def open_ledger(inventory: Inventory, clock: ratelimit.Clock = ratelimit.utc_now
                ) -> ratelimit.Ledger:
    """The rate-limit ledger of the inventory's CA directory."""
    acme = inventory.settings.acme
    return ratelimit.Ledger(inventory.state_dir, acme.directory, acme.rate_limits, clock)


def for_this_ca(decisions: Mapping[str, CertDecision], records: Mapping[str, CertRecord],
                directory: str) -> dict[str, CertDecision]:
    """Decisions seen with the controller's records: a certificate another CA directory
    issued (staging, before going to production) is ordered again from this one, and a
    renew is a renewal (exempt from some of the CA's limits) only when this CA issued it."""
    seen = {}
    for key, decision in decisions.items():
        record = records.get(key)
        if record is not None and record.directory != directory and decision.action == "keep":
            decision = CertDecision("renew", f"issued by another CA ({record.directory})")
        elif decision.renewal and (record is None or record.directory != directory):
            decision = replace(decision, renewal=False)
        seen[key] = decision
    return seen


def demands(targets: Sequence[CertTarget], decisions: Mapping[str, CertDecision],
            acme: AcmeSettings) -> list[ratelimit.Demand]:
    """What ordering each target that is not kept asks of the CA's limits."""
    return [ratelimit.Demand(t.key, t.names, acme.directory, decisions[t.key].renewal)
            for t in targets if decisions[t.key].action != "keep"]


def _parallel(func: Callable[[Any], T], items: Sequence[Any],
              workers: int = HOST_PARALLEL) -> list[T | ProvisionerError]:
    """``func`` over items in threads; a ProvisionerError is returned in its place."""
    def safe(item: Any) -> T | ProvisionerError:
        try:
            return func(item)
        except ProvisionerError as exc:
            return exc

    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(len(items), workers)) as pool:
        return list(pool.map(safe, items))


def _split(values: Sequence[Any], targets: Sequence[CertTarget]) -> tuple[list[Any], dict[str, str]]:
    """(successful values, target key -> problem) from ``_parallel``'s output."""
    good, problems = [], {}
    for target, value in zip(targets, values):
        if isinstance(value, ProvisionerError):
            problems[target.key] = str(value)
        else:
            good.append(value)
    return good, problems
