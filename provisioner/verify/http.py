"""HTTP checks: the http:// redirect, the HTTPS answer, its headers and content, and
reading the pages the publication score is computed from.

Requests go over connections this package opens itself (plain TCP, or the TLS
connection the TLS check opened) to the address DNS gave, with the agency name in the
Host header. Answers are read by httptools (llhttp, the HTTP/1.1 parser of Node.js, in
C): a third of the CPU h11's pure-Python state machine took per request. One connection
serves every page of a site (keep-alive), so a site costs one TLS handshake.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import quote, urljoin, urlsplit

import httptools

from .content import PageAnalysis, ScoringRules, not_content_reason
from .model import CheckResult, Status, deadline, result
from .tls import ProbeFailure

MAX_BODY = 2 * 1024 * 1024  # a larger page is read up to here
USER_AGENT = "provisioner-verify/1 (site verification of the regency's communications office)"
HSTS_MIN_SECONDS = 180 * 86400
MAX_SAME_SITE_REDIRECTS = 3
CHARSET_RE = re.compile(rb"""charset=["']?([A-Za-z0-9_.:-]+)""")
MAX_AGE_RE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
NOT_VISIBLE_ASCII = re.compile(r"[^\x21-\x7e]+")
ADVISORY_HEADERS = ("x-content-type-options", "referrer-policy", "content-security-policy")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    def text(self) -> str:
        """The body decoded by its declared charset (header, then meta), else UTF-8."""
        declared = CHARSET_RE.search(self.headers.get("content-type", "").encode()) \
            or CHARSET_RE.search(self.body[:2048])
        encoding = declared.group(1).decode() if declared else "utf-8"
        try:
            return self.body.decode(encoding, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


def request(target: str, host: str) -> bytes:
    """A GET request, in one write. The target comes from pages read (links): anything but
    visible ASCII in it is percent-encoded, so a link can never split the request."""
    target = NOT_VISIBLE_ASCII.sub(lambda m: quote(m.group()), target)
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\n\r\n").encode("ascii")


class _Answer:
    """httptools' callbacks: one response as it arrives."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; repeated ones joined with ", "
        self.chunks: list[bytes] = []
        self.size = 0
        self.received = self.headers_done = self.complete = self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.size < MAX_BODY:
            self.chunks.append(body)
            self.size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # here: the parser resets after

    def connection_ended(self) -> None:
        """A body with neither a length nor chunks ends when the server closes."""
        if self.headers_done and "content-length" not in self.headers \
                and "chunked" not in self.headers.get("transfer-encoding", "").lower():
            self.complete = True


class HttpProtocol(asyncio.Protocol):
    """The client end of one connection (plain or TLS). What arrives goes straight from the
    transport to httptools, and a request's future completes when its answer has: no
    stream reader between them (a fifth of the CPU of a request)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()  # made by the loop's create_connection
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._answer: _Answer | None = None
        self._done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.open = transport, True  # type: ignore[assignment]

    async def exchange(self, request: bytes, timeout: float) -> _Answer:
        """Send a request and wait for its answer, whole or cut short by the connection's
        end. Raises TimeoutError, OSError or httptools' errors."""
        if not self.open:
            raise ConnectionResetError("the connection is closed")
        answer = self._answer = _Answer()
        done = self._done = self.loop.create_future()
        timer = deadline(self.loop, done, timeout)
        self.transport.write(request)
        try:
            await done
        finally:
            timer.cancel()
            self._answer = self._done = None
            answer.parser = None  # it refers back to the answer
        return answer

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.complete:  # the server talks out of turn: do not reuse
            self.open = False
            return
        answer.received = True
        try:
            answer.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._end(exc)
            self.transport.close()
            return
        if answer.complete:
            self._done.set_result(None)

    def eof_received(self) -> bool:
        self._end(None)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def _end(self, error: BaseException | None) -> None:
        self.open = False
        if self._done is None or self._done.done():
            return
        if error is None:
            self._answer.connection_ended()
            self._done.set_result(None)
        else:
            self._done.set_exception(error)

    def close(self) -> None:
        """Drop the connection: every answer wanted has been read, so no TLS close_notify
        is sent and nothing is flushed (half the CPU of a graceful TLS close)."""
        self.open = False
        if self.transport is not None:
            self.transport.abort()


class HttpConnection:
    """HTTP/1.1 GETs over one open connection, kept alive while the server allows."""

    def __init__(self, protocol: HttpProtocol, host: str):
        self.protocol, self.host = protocol, host
        self.reusable = True  # no answer read yet, or the last one allowed another request

    async def get(self, target: str, timeout: float) -> Response:
        self.reusable = False
        try:
            answer = await self.protocol.exchange(request(target, self.host), timeout)
        except TimeoutError:
            raise ProbeFailure(Status.ERROR, f"GET {target}: no answer within {timeout:g}s") \
                from None
        except (OSError, httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            raise ProbeFailure(Status.ERROR, f"GET {target}: {exc or type(exc).__name__}") \
                from None
        if not answer.received:  # nginx's "return 444", a refused site
            raise ProbeFailure(Status.FAIL, f"GET {target}: the server closed the connection "
                                            "without an answer")
        if not answer.complete:
            raise ProbeFailure(Status.ERROR, f"GET {target}: the connection closed in the "
                                             "middle of the answer")
        self.reusable = answer.keep_alive and self.protocol.open
        return Response(answer.status, answer.headers, b"".join(answer.chunks)[:MAX_BODY])

    def close(self) -> None:
        self.protocol.close()


async def open_plain(address: str, port: int, host: str, timeout: float) -> HttpConnection:
    """A plain TCP connection to address:port that sends ``Host: host``."""
    try:
        async with asyncio.timeout(timeout):
            _, protocol = await asyncio.get_running_loop().create_connection(
                HttpProtocol, address, port)
    except TimeoutError:
        raise ProbeFailure(Status.ERROR, f"{address}:{port}: no connection within {timeout:g}s") \
            from None
    except ConnectionRefusedError:
        raise ProbeFailure(Status.FAIL, f"{address}:{port}: connection refused") from None
    except OSError as exc:
        raise ProbeFailure(Status.ERROR, f"{address}:{port}: {exc.strerror or exc}") from None
    return HttpConnection(protocol, host)


class Site:
    """The pages of one site (scheme://host[:port]) over one connection at a time."""

    def __init__(self, base_url: str, first: HttpConnection,
                 connect: Callable[[], Awaitable[HttpConnection]], timeout: float):
        self.base_url = base_url
        self.connection: HttpConnection | None = first
        self.connect, self.timeout = connect, timeout

    async def get(self, target: str) -> Response:
        if self.connection is None or not self.connection.reusable:
            self.close()
            self.connection = await self.connect()
        return await self.connection.get(target, self.timeout)

    async def get_following(self, target: str) -> tuple[str, Response]:
        """GET, following redirects that stay on this site (https://name/ -> /beranda/)."""
        response = await self.get(target)
        for _ in range(MAX_SAME_SITE_REDIRECTS):
            location = response.headers.get("location")
            if not (300 <= response.status < 400 and location):
                break
            nxt = urljoin(urljoin(self.base_url, target), location)
            if urlsplit(nxt)[:2] != urlsplit(self.base_url)[:2]:
                break
            target = _path_of(nxt)
            response = await self.get(target)
        return target, response

    def close(self) -> None:
        if self.connection:
            self.connection.close()
            self.connection = None


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


# =========================================================================== redirect

async def check_redirect(http_url: str, address: str, timeout: float) -> CheckResult:
    """GET http://name/ and judge its first answer, like Mozilla Observatory does."""
    parts = urlsplit(http_url)
    try:
        connection = await open_plain(address, parts.port or 80, parts.netloc, timeout)
        try:
            response = await connection.get(_path_of(http_url), timeout)
        finally:
            connection.close()
    except ProbeFailure as failure:
        if failure.status is Status.FAIL:
            return result("http.redirect", Status.WARN, "redirection-not-needed-no-http: "
                          f"{failure.detail}; a visitor typing the name gets no page")
        return result("http.redirect", failure.status, failure.detail)
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
    target = urljoin(http_url, location)
    parts = urlsplit(target)
    if parts.scheme != "https":
        return result("http.redirect", Status.FAIL,
                      f"redirection-not-to-https: first redirect goes to {target}")
    if parts.hostname != host:
        return result("http.redirect", Status.WARN, f"redirection-off-host-from-http: {target} "
                                                    f"(HSTS for {host} is never set)")
    return result("http.redirect", Status.PASS, f"redirection-to-https: {status} -> {target}")


# =========================================================================== https

def https_checks(path: str, response: Response, page: PageAnalysis,
                 rules: ScoringRules) -> list[CheckResult]:
    """status, HSTS, security headers and real content of the home page (pure)."""
    return [_status(path, response), hsts_result(response.headers),
            headers_result(response.headers), content_result(response, page, rules)]


def _status(path: str, response: Response) -> CheckResult:
    where = "" if path == "/" else f" (after redirect to {path})"
    if response.status == 200:
        return result("https.status", Status.PASS, f"200{where}")
    location = response.headers.get("location")
    to = f" to {location}: another site, not verified" if location else ""
    return result("https.status", Status.FAIL, f"{response.status}{to}{where}")


def hsts_result(headers: dict[str, str]) -> CheckResult:
    value = headers.get("strict-transport-security")
    if value is None:
        return result("https.hsts", Status.FAIL, "no Strict-Transport-Security header")
    match = MAX_AGE_RE.search(value)
    seconds = int(match.group(1)) if match else 0
    status = Status.PASS if seconds >= HSTS_MIN_SECONDS else Status.FAIL
    return result("https.hsts", status, f"max-age {seconds // 86400} days "
                                        f"(at least {HSTS_MIN_SECONDS // 86400} needed): {value}")


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
