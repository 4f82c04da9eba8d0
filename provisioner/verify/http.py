"""HTTP checks: the http:// redirect, the HTTPS answer, its headers and content, and
reading the pages the publication score is computed from.

Requests go over streams this package opens itself (plain TCP, or the TLS stream the
TLS check opened) to the address DNS gave, with the agency name in the Host header,
using h11 (the HTTP/1.1 state machine httpx is built on). One connection serves every
page of a site (keep-alive), so a site costs one TLS handshake.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import h11

from .content import (
    PageAnalysis,
    Publication,
    Published,
    ScoringRules,
    missing_items,
    not_content_reason,
    pages_from_data,
    pages_from_links,
    read_published,
    score_publication,
)
from .model import CheckResult, Status, result
from .tls import ProbeFailure

MAX_BODY = 2 * 1024 * 1024  # a larger page is read up to here
USER_AGENT = "provisioner-verify/1 (site verification of the regency's communications office)"
HSTS_MIN_SECONDS = 180 * 86400
MAX_SAME_SITE_REDIRECTS = 3
CHARSET_RE = re.compile(rb"""charset=["']?([A-Za-z0-9_.:-]+)""")
MAX_AGE_RE = re.compile(r"max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
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


class HttpConnection:
    """HTTP/1.1 GETs over one open stream, kept alive while the server allows."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host
        self.h11 = h11.Connection(h11.CLIENT)

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE

    async def get(self, target: str, timeout: float) -> Response:
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(target)
        except TimeoutError:
            raise ProbeFailure(Status.ERROR, f"GET {target}: no answer within {timeout:g}s") \
                from None
        except (OSError, h11.ProtocolError) as exc:
            raise ProbeFailure(Status.ERROR, f"GET {target}: {exc}") from None

    async def _exchange(self, target: str) -> Response:
        conn = self.h11
        headers = [("Host", self.host), ("User-Agent", USER_AGENT), ("Accept", "*/*")]
        self.writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers)))
        self.writer.write(conn.send(h11.EndOfMessage()))
        status, header_map, chunks, size = 0, {}, [], 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                if not data and not status:  # nginx's "return 444", a refused site
                    raise ProbeFailure(Status.FAIL, f"GET {target}: the server closed the "
                                                    "connection without an answer")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    key, text = name.decode().lower(), value.decode("latin-1")
                    header_map[key] = f"{header_map[key]}, {text}" if key in header_map else text
            elif isinstance(event, h11.Data):
                if size < MAX_BODY:
                    chunks.append(event.data)
                    size += len(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        return Response(status, header_map, b"".join(chunks)[:MAX_BODY])

    def close(self) -> None:
        self.writer.close()


async def open_plain(address: str, port: int, host: str, timeout: float) -> HttpConnection:
    """A plain TCP connection to address:port that sends ``Host: host``."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
    except TimeoutError:
        raise ProbeFailure(Status.ERROR, f"{address}:{port}: no connection within {timeout:g}s") \
            from None
    except ConnectionRefusedError:
        raise ProbeFailure(Status.FAIL, f"{address}:{port}: connection refused") from None
    except OSError as exc:
        raise ProbeFailure(Status.ERROR, f"{address}:{port}: {exc.strerror or exc}") from None
    return HttpConnection(reader, writer, host)


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


# =========================================================================== publication

async def read_publication(site: Site, home_path: str, home: PageAnalysis,
                           rules: ScoringRules) -> Publication:
    """Read the service-standard pages the home page links to, then, if items are still
    missing, the ones standar-pelayanan.json names; stop once every item is found.

    A page that cannot be read ends the reading; what was read is still scored."""
    pages: dict[str, Published] = {home_path: home}
    home_url = urljoin(site.base_url, home_path)
    try:
        await _read_pages(site, pages_from_links(home, home_url, rules), pages, rules)
        if missing_items(pages, rules):
            data = await site.get(rules.data_path)
            if data.status == 200:
                listed = pages_from_data(data.text(), home_url, rules) or []
                await _read_pages(site, listed, pages, rules)
    except ProbeFailure:
        pass
    return score_publication(pages, rules)


async def _read_pages(site: Site, paths: list[str], pages: dict[str, Published],
                      rules: ScoringRules) -> None:
    for path in paths:
        if not missing_items(pages, rules) or len(pages) > rules.max_pages:
            return
        if path not in pages:
            response = await site.get(path)
            if response.status == 200:
                pages[path] = read_published(response.text(), rules)
