"""The ACME client: the one module that talks to the CA, through the ``acme`` library.

* the account: an ECDSA P-256 key in ``<state_dir>/acme/account.pem`` (0600) and its
  registration (``AcmeAccount``); the CA's directory; whether the CA knows a key;
* one order: placed with a certificate key (ECDSA P-256, made here, never logged), the
  challenges it asks for, answered, polled, finalized, downloaded (``start_order``,
  ``finish_order``); every order and failed validation goes to the rate-limit ledger;
* revocation of a certificate with the account that ordered it (offboarding);
* etiquette: authorizations and orders are polled with backoff (``poll``: first after
  about a second, growing, capped, inside the order's deadline) and a ``Retry-After``
  the CA sends is honoured, on polls and on 429/503 refusals (``PatientNetwork``).
  Pebble 2.4 sends none, so unit tests feed real ``requests`` responses that do;
* every failure of the library or the network becomes an ``AcmeError`` (``acme_call``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import josepy as jose
import requests
from acme import challenges, crypto_util, messages
from acme import client as acme_client
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import AcmeError, ProvisionerError
from ..registry.models import AcmeSettings, Inventory, Settings
from ..safety.secrets import read_secret_file, write_private_file
from . import ratelimit
from .certs import CertTarget

ORDER_TIMEOUT = 90.0  # seconds for one order: validation, finalization, download
# Seconds between polls of an authorization or order: the first after about a second,
# growing by half each time, capped; a longer Retry-After from the CA wins.
POLL_FIRST, POLL_GROWTH, POLL_MAX = 1.0, 1.5, 8.0
# A CA that answers 429 or 503 with a Retry-After this short is asked again (a few times);
# a longer wait ends the order with the time the CA gave.
BUSY_WAIT_MAX, BUSY_RETRIES = 30.0, 3
REVOKE_REASON = 5  # RFC 5280 CRLReason cessationOfOperation: the site is closed
TRANSIENT_ACME_PROBLEMS = ("serverInternal", "rateLimited", "badNonce")
USER_AGENT = "provisioner (regency agency hosting)"
T = TypeVar("T")


# =========================================================================== keys


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


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
                write_private_file(self.key_file, key_pem(new_private_key()))
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
        write_private_file(self.registration_file, (json.dumps(
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


# =========================================================================== one order


@dataclass
class Order:
    """One order in flight: its own client, the certificate's key, the challenges it answers."""

    target: CertTarget
    client: acme_client.ClientV2
    key: ec.EllipticCurvePrivateKey
    order: messages.OrderResource
    # (challenge, response, validation, identifier) per authorization
    challenges: list[tuple[messages.ChallengeBody, Any, str, str]]

    def challenge_files(self) -> list[tuple[str, bytes]]:
        """http-01: (token, content) of each file the host serves for the CA."""
        return [(c[0].chall.encode("token"), c[2].encode()) for c in self.challenges]

    def txt_records(self) -> list[tuple[str, str]]:
        """dns-01: (name, value) of each TXT record to publish."""
        return [(challb.chall.validation_domain_name(name), validation)
                for challb, _response, validation, name in self.challenges]


def start_order(account: AcmeAccount, target: CertTarget, ledger: ratelimit.Ledger) -> Order:
    """Place the order for ``target`` with a new key: the challenges it must answer."""
    client = account.client()
    key = new_private_key()
    with acme_call(", ".join(target.names)):
        csr = crypto_util.make_csr(key_pem(key), list(target.names))
        order = client.new_order(csr)
        ledger.record_order(account.directory_url)
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
            response, validation = challb.response_and_validation(account.jwk)
            found.append((challb, response, validation, authz.body.identifier.value))
    return Order(target, client, key, order, found)


def finish_order(order: Order, ledger: ratelimit.Ledger) -> bytes:
    """Answer the challenges, wait for every authorization, finalize: the full chain (PEM)."""
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
                ledger.record_failures([final.body.identifier.value])
                raise acme_errors.ValidationError([final])
        return _finalize(client, order.order, deadline)


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


# =========================================================================== revocation


def revoke_certificate(inventory: Inventory, pem: str) -> str:
    """Revoke a certificate at the ACME CA with the account that ordered it; what happened.

    AcmeError when the CA cannot be reached or fails for now (a re-run tries again). A
    CA that answers with a final refusal (say, it does not know the certificate: another
    CA or directory issued it) cannot be asked again with a better outcome: that is
    reported, not raised, and the offboarding goes on.
    """
    cert = x509.load_pem_x509_certificate(pem.encode())
    account = AcmeAccount(inventory.settings, inventory.state_dir)
    with acme_call(f"certificate serial {cert.serial_number:x}"):
        client = account.client()
        try:
            client.revoke(cert, REVOKE_REASON)
        except messages.Error as exc:
            if exc.code == "alreadyRevoked":
                return "already revoked"
            if exc.code in TRANSIENT_ACME_PROBLEMS:
                raise
            return f"NOT revoked (the CA refused: {exc.detail or exc.code})"
    return "revoked"
