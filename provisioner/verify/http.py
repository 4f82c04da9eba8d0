"""HTTP checks: the http:// redirect, the HTTPS answer, its headers and content, and
reading the pages the publication score is computed from.

Requests go through aiohttp, one session per run, to the address DNS gave: the URL
names that address, the agency name goes in the Host header and the TLS SNI. aiohttp
skips 1xx answers, undoes chunking and gzip/deflate (inflating only as fast as the body
is read, so a decompression bomb stops at MAX_BODY), and caps the header count and
sizes; redirects are followed here, and only on the same site. The connections of a
site are kept alive between its pages (one TLS handshake for a healthy site), and the
handshake the TLS checks judge is read from the connection that carried the request.

aiohttp rather than httpx, measured on benchmarks/sweep_bench.py's lab (1,000 healthy
sites, its sweep_run: the whole CLI process, 3 rounds each, alternating, on the shared
2-core machine, 2026-11-30), with this module's Site written over httpx 0.28 for the
comparison (the name pinned to the address by an httpcore network backend): aiohttp
86-101 verifications per CPU-second (median 95), httpx 44-55 (median 47). httpx's
pure-Python h11 costs twice the CPU of aiohttp's C parser (llhttp); httpx also inflates
each gzip chunk whole (no output cap) and has no header count limit. Most of a
verification's CPU is elsewhere (page analysis, DNS): the HTTP client is about a
sixth of it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import errno
import functools
import re
import ssl
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import webencodings
from w3lib.encoding import (
    html_body_declared_encoding,
    http_content_type_encoding,
    read_bom,
    resolve_encoding,
    to_unicode,
)

from .content import PageAnalysis, ScoringRules, not_content_reason
from .model import CheckResult, Status, ip_literal, result
from .tls import Handshake, ProbeFailure, TlsContexts, handshake_of

MAX_BODY = 2 * 1024 * 1024  # a larger page (after decompression) is read up to here
MAX_HEADERS = 128  # more headers than this: the answer is refused
MAX_HEADER_LINE = 8190  # the status line
MAX_HEADER_FIELD = 16384  # one header (real sites send CSP headers of several kB)
DETECT_SAMPLE = 64 * 1024  # bytes the charset detector reads
MAX_DETAIL = 160  # characters of what a site sent quoted in a detail
USER_AGENT = "provisioner-verify/2"
HSTS_MIN_SECONDS = 180 * 86400
MAX_SAME_SITE_REDIRECTS = 3
MAX_AGE_RE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]+")
ADVISORY_HEADERS = ("x-content-type-options", "referrer-policy", "content-security-policy")
# WHATWG maps these labels to its "replacement" decoder: encodings that spell markup in
# ASCII escapes (like UTF-7), which a browser never decodes
UNSAFE_ENCODINGS = frozenset({"replacement", "hz-gb-2312", "iso-2022-kr", "iso-2022-cn",
                              "iso-2022-cn-ext", "x-user-defined"})


def user_agent(contact: str | None) -> str:
    """The tool and the office to write to: ``provisioner-verify/2 (+mailto:...)``."""
    contact = NOT_VISIBLE_ASCII.sub("", contact or "")
    return f"{USER_AGENT} (+{contact})" if contact else USER_AGENT


def shown(text: str) -> str:
    """Something a site sent, quoted in a detail: escaped and bounded."""
    return repr(text[:MAX_DETAIL] + ("..." if len(text) > MAX_DETAIL else ""))


# =========================================================================== pages

@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes  # decompressed, at most MAX_BODY bytes

    def text(self) -> str:
        """The body decoded as a browser would (decoded once)."""
        return self._decoded

    @functools.cached_property
    def _decoded(self) -> str:
        return page_text(self.headers.get("content-type"), self.body)


def page_text(content_type: str | None, body: bytes) -> str:
    """The encoding a browser uses: the byte order mark, then the HTTP charset, then the
    page's ``<meta>`` declaration (w3lib finds them and resolves their labels), else
    UTF-8 when the bytes are UTF-8, else a detector's guess. Only the encodings a WHATWG
    label names are honoured (``idna``, ``utf-7``, ``rot13`` are not)."""
    bom_codec, bom = read_bom(body)
    if bom_codec:
        return to_unicode(body[len(bom):], bom_codec)
    codec = (_honoured(http_content_type_encoding(content_type))
             or _meta_rule(_honoured(html_body_declared_encoding(body))))
    if codec:
        return to_unicode(body, codec)
    try:  # undeclared: UTF-8 if it is (a character cut by MAX_BODY is dropped)
        return codecs.getincrementaldecoder("utf-8")().decode(body)
    except UnicodeDecodeError:
        return to_unicode(body, _detected(body))


@functools.cache
def _browser_codecs() -> frozenset[str]:
    """The Python codecs w3lib resolves the WHATWG labels to (webencodings' table)."""
    return frozenset(codec for label, encoding in webencodings.LABELS.items()
                     if encoding not in UNSAFE_ENCODINGS
                     and (codec := resolve_encoding(label)) is not None)


def _honoured(codec: str | None) -> str | None:
    if codec not in _browser_codecs():
        return None
    return "utf-16-le" if codec == "utf-16" else codec  # WHATWG: the utf-16 label is LE


def _meta_rule(codec: str | None) -> str | None:
    """A page that could read its own ``<meta>`` is not UTF-16: WHATWG reads it as UTF-8."""
    return "utf-8" if codec and codec.startswith("utf-16") else codec


def _detected(body: bytes) -> str:
    """charset-normalizer's guess from the first bytes, else windows-1252 (imported here:
    most runs never need it, and it costs every sweep ~30 ms and ~4 MB)."""
    import charset_normalizer

    best = charset_normalizer.from_bytes(body[:DETECT_SAMPLE]).best()
    return _honoured(resolve_encoding(best.encoding) if best else None) or "cp1252"


# =========================================================================== client

_seen_connection: contextvars.ContextVar[Callable[[asyncio.Transport], None]] = \
    contextvars.ContextVar("seen_connection")


class _Request(aiohttp.ClientRequest):
    """Shows the site that sends a request the connection it goes over (new or kept
    alive), before the answer: its TLS handshake is judged even when no answer comes."""

    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        watcher = _seen_connection.get(None)
        if watcher is not None and conn.transport is not None:
            watcher(conn.transport)
        return await super().send(conn)


class HttpClient:
    """One aiohttp session for a run, shared by every site (made on first use, inside
    the event loop). Limits per address are the verifier's (AddressLimiter), not
    aiohttp's; cookies are not kept."""

    def __init__(self, tls: TlsContexts, timeout: float, agent: str = USER_AGENT):
        self.tls, self.timeout = tls, timeout
        self.headers = {"User-Agent": agent, "Accept": "*/*",
                        "Accept-Encoding": "gzip, deflate"}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, use_dns_cache=False,
                                             keepalive_timeout=max(self.timeout, 1.0))
            self._session = aiohttp.ClientSession(
                connector=connector, request_class=_Request,
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True,
                timeout=aiohttp.ClientTimeout(total=2 * self.timeout,
                                              sock_connect=self.timeout,
                                              sock_read=self.timeout),
                max_line_size=MAX_HEADER_LINE, max_field_size=MAX_HEADER_FIELD,
                max_headers=MAX_HEADERS, skip_auto_headers=("User-Agent",))
        return self._session

    def site(self, url: str, address: str, name: str) -> Site:
        """The site at ``url`` (scheme, host, port), reached at ``address``."""
        return Site(self, url, address, name)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.connector.close(abort_ssl=True)
            await self._session.close()


class Site:
    """The pages of one site (scheme://host[:port]), over connections kept alive.

    HTTPS: the chain is verified by the SSL context (names are matched by the TLS
    checks); if it does not verify, the pages are read over an unverified handshake and
    ``handshake.chain_problem`` says why. ``handshake`` is None until a connection
    was made."""

    def __init__(self, client: HttpClient, url: str, address: str, name: str):
        parts = urlsplit(url)
        self.client, self.name = client, name
        self.base_url = f"{parts.scheme}://{parts.netloc}/"
        self.https = parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        host = f"[{address}]" if ":" in address else address
        self._origin = f"{parts.scheme}://{host}:{self.port}"
        self.where = f"{host}:{self.port}"  # for failure details
        self._headers = {**client.headers, "Host": parts.netloc}
        self._sni = None if ip_literal(name) is not None else name
        self._ssl: ssl.SSLContext | bool = client.tls.verified if self.https else True
        self._chain_problem: str | None = None
        self._transports: list[asyncio.Transport] = []
        self.handshake: Handshake | None = None

    async def get(self, target: str) -> Response:
        """GET ``target`` (a path and query): the answer, or ProbeFailure."""
        token = _seen_connection.set(self._saw)
        try:
            return await self._get(_request_target(target))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:  # the site's
            raise self._failure(target, exc) from None
        finally:
            _seen_connection.reset(token)

    async def _get(self, target: str) -> Response:
        try:
            answer = await self._send(target)
        except aiohttp.ClientConnectorCertificateError as exc:
            if self._ssl is not self.client.tls.verified:
                raise
            error = exc.certificate_error
            self._chain_problem = getattr(error, "verify_message", None) or str(error)
            self._ssl = self.client.tls.unverified
            answer = await self._send(target)
        async with answer:
            return await _read(answer)

    async def _send(self, target: str) -> aiohttp.ClientResponse:
        return await self.client.session.get(
            f"{self._origin}{target}", headers=self._headers, allow_redirects=False,
            ssl=self._ssl, server_hostname=self._sni)

    def _saw(self, transport: asyncio.Transport) -> None:
        self._transports.append(transport)
        if self.https and self.handshake is None:
            self.handshake = handshake_of(transport.get_extra_info("ssl_object"),
                                          self._chain_problem)

    def _failure(self, target: str, exc: Exception, method: str = "GET") -> ProbeFailure:
        where, timeout = self.where, self.client.timeout
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return ProbeFailure(Status.FAIL, f"{where}: handshake failed: "
                                             f"{shown(str(exc.certificate_error))}")
        if isinstance(exc, aiohttp.ClientSSLError):
            reason = getattr(exc.os_error, "reason", None) or exc.os_error
            return ProbeFailure(Status.FAIL, f"{where}: handshake refused ({reason})")
        if isinstance(exc, aiohttp.ClientConnectorError):
            if isinstance(exc.os_error, ConnectionRefusedError):
                return ProbeFailure(Status.FAIL, f"{where}: connection refused")
            error = exc.os_error  # the system's words
            return ProbeFailure(Status.ERROR, f"{where}: {error.strerror or type(error).__name__}")
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return ProbeFailure(Status.ERROR, f"{where}: no connection within {timeout:g}s")
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return ProbeFailure(Status.ERROR, f"{method} {target}: no answer within {timeout:g}s")
        if isinstance(exc, TimeoutError):
            return ProbeFailure(Status.ERROR, f"{method} {target}: the answer took longer than "
                                              f"{2 * timeout:g}s")
        if isinstance(exc, aiohttp.ServerDisconnectedError) or (  # nginx's "return 444"
                isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET):
            return ProbeFailure(Status.FAIL, f"{method} {target}: the server closed the connection "
                                             "without an answer")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return ProbeFailure(Status.ERROR, f"{method} {target}: the body could not be read "
                                              f"({shown(str(exc))})")
        if isinstance(exc, aiohttp.ClientResponseError):
            return ProbeFailure(Status.ERROR, f"{method} {target}: not an HTTP answer "
                                              f"({shown(exc.message)})")
        return ProbeFailure(Status.ERROR,
                            f"{method} {target}: {shown(str(exc) or type(exc).__name__)}")

    async def get_following(self, target: str) -> tuple[str, Response]:
        """GET, following redirects that stay on this site (https://name/ -> /beranda/).
        A redirect whose Location cannot be read is a failure."""
        response = await self.get(target)
        for _ in range(MAX_SAME_SITE_REDIRECTS):
            location = response.headers.get("location")
            if not (300 <= response.status < 400 and location):
                break
            try:
                nxt = urljoin(urljoin(self.base_url, target), location)
                parts = urlsplit(nxt)
            except ValueError:
                raise ProbeFailure(Status.FAIL, f"GET {target}: {response.status} to a malformed "
                                                f"Location {shown(location)}") from None
            if parts[:2] != urlsplit(self.base_url)[:2]:
                break
            target = _path_of(nxt)
            response = await self.get(target)
        return target, response

    def close(self) -> None:
        """Drop the site's connections: every answer wanted has been read, so no TLS
        close_notify is sent (the connection pool then discards them)."""
        for transport in self._transports:
            transport.abort()
        self._transports.clear()


async def _read(answer: aiohttp.ClientResponse) -> Response:
    """Status, headers and at most MAX_BODY bytes of body; a longer body is cut (and
    its connection dropped) without reading (or inflating) the rest."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in answer.raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY:
        chunk = await answer.content.read(MAX_BODY - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size >= MAX_BODY and not answer.content.at_eof():
        answer.close()
    return Response(answer.status, headers, b"".join(chunks))


def _request_target(target: str) -> str:
    """A path (and query) from a page read: anything but visible ASCII in it is
    percent-encoded, so a link can never split the request."""
    target = NOT_VISIBLE_ASCII.sub(lambda m: quote(m.group()), target)
    return target if target.startswith("/") else f"/{target}"


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


# =========================================================================== redirect

async def check_redirect(client: HttpClient, http_url: str, address: str,
                         name: str) -> CheckResult:
    """GET http://name/ and judge its first answer, like Mozilla Observatory does."""
    site = client.site(http_url, address, name)
    try:
        response = await site.get(_path_of(http_url))
    except ProbeFailure as failure:
        if failure.status is Status.FAIL:
            return result("http.redirect", Status.WARN, "redirection-not-needed-no-http: "
                          f"{failure.detail}; a visitor typing the name gets no page")
        return result("http.redirect", failure.status, failure.detail)
    finally:
        site.close()
    return redirect_result(http_url, response.status, response.headers.get("location"))


def redirect_result(http_url: str, status: int, location: str | None) -> CheckResult:
    """The first redirect's outcome, in Observatory's words (pure)."""
    host = urlsplit(http_url).hostname
    if not 300 <= status < 400:
        return result("http.redirect", Status.FAIL,
                      f"redirection-missing: http:// answers {status} without redirecting")
    if not location:
        return result("http.redirect", Status.FAIL, f"redirection-invalid: {status} "
                                                    "without a Location header")
    try:
        target = urljoin(http_url, location)
        parts = urlsplit(target)
        target_host = parts.hostname
    except ValueError:
        return result("http.redirect", Status.FAIL, f"redirection-invalid: {status} to a "
                                                    f"malformed Location {shown(location)}")
    if parts.scheme != "https":
        return result("http.redirect", Status.FAIL,
                      f"redirection-not-to-https: first redirect goes to {shown(target)}")
    if target_host != host:
        return result("http.redirect", Status.WARN, "redirection-off-host-from-http: "
                                                    f"{shown(target)} (HSTS for {host} is "
                                                    "never set)")
    return result("http.redirect", Status.PASS, f"redirection-to-https: {status} -> {target}")


# =========================================================================== https

def https_checks(path: str, response: Response, content: CheckResult) -> list[CheckResult]:
    """status, HSTS and security headers of the home page, then its real content
    (``content``: content_result's check, which the caller uses too) (pure)."""
    return [_status(path, response), hsts_result(response.headers),
            headers_result(response.headers), content]


def _status(path: str, response: Response) -> CheckResult:
    where = "" if path == "/" else f" (after redirect to {path})"
    if response.status == 200:
        return result("https.status", Status.PASS, f"200{where}")
    location = response.headers.get("location")
    to = f" to {shown(location)}: another site, not verified" if location else ""
    return result("https.status", Status.FAIL, f"{response.status}{to}{where}")


def hsts_result(headers: dict[str, str]) -> CheckResult:
    value = headers.get("strict-transport-security")
    if value is None:
        return result("https.hsts", Status.FAIL, "no Strict-Transport-Security header")
    match = MAX_AGE_RE.search(value[:MAX_HEADER_FIELD])
    seconds = int(match.group(1)[:12]) if match else 0
    status = Status.PASS if seconds >= HSTS_MIN_SECONDS else Status.FAIL
    return result("https.hsts", status, f"max-age {seconds // 86400} days "
                                        f"(at least {HSTS_MIN_SECONDS // 86400} needed): "
                                        f"{shown(value)}")


def headers_result(headers: dict[str, str]) -> CheckResult:
    """Advisory security headers: a missing one is a warning, never a failure."""
    missing = [h for h in ADVISORY_HEADERS if h not in headers]
    csp = headers.get("content-security-policy", "").lower()
    if "x-frame-options" not in headers and "frame-ancestors" not in csp:
        missing.append("x-frame-options (or CSP frame-ancestors)")
    if missing:
        return result("https.headers", Status.WARN, "missing: " + ", ".join(missing))
    return result("https.headers", Status.PASS, "all present")


def content_result(response: Response, page: PageAnalysis, rules: ScoringRules) -> CheckResult:
    if response.status != 200:
        return result("https.content", Status.FAIL, f"no page: HTTP {response.status}")
    reason = not_content_reason(page, rules)
    if reason:
        return result("https.content", Status.FAIL, f"{reason} (title {page.title!r})")
    return result("https.content", Status.PASS,
                  f"{page.text_chars} letters of content, title {page.title!r}")


# =========================================================================== one request

def request_once(method: str, url: str, *, timeout: float,
                 ssl_context: ssl.SSLContext | None = None, json: Any = None,
                 data: bytes | None = None, headers: Mapping[str, str] | None = None
                 ) -> Response:
    """One request outside a sweep (the TLS guardrails, the lab's probes), in an event
    loop and session of its own, with the verifier's caps (headers, MAX_BODY) and no
    redirect followed: the answer, whatever its status, or a ProbeFailure in the
    verifier's words. ``ssl_context``: the trust for https:// (default: the system's);
    the body is ``json`` (an object) or ``data`` (bytes as they are); ``headers`` may name
    another Host than the URL's."""
    return asyncio.run(_request_once(method, url, timeout, ssl_context, json, data,
                                     headers or {}))


async def _request_once(method: str, url: str, timeout: float,
                        ssl_context: ssl.SSLContext | None, json: Any, data: bytes | None,
                        headers: Mapping[str, str]) -> Response:
    context = ssl_context or _system_trust()
    client = HttpClient(TlsContexts(context, context), timeout)
    parts = urlsplit(url)
    site = client.site(url, parts.hostname or "", parts.hostname or "")
    target = _path_of(url)
    try:
        answer = await client.session.request(
            method, url, headers={**client.headers, **headers}, json=json, data=data,
            allow_redirects=False, ssl=context if site.https else True)
        async with answer:
            return await _read(answer)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise site._failure(target, exc, method) from None
    finally:
        await client.close()


@functools.cache
def _system_trust() -> ssl.SSLContext:
    """The system's trust store, loaded once (it costs ~30 ms of CPU each time)."""
    return ssl.create_default_context()
