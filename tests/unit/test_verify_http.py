"""The verifier's HTTP client (aiohttp) against loopback servers that answer with canned
bytes: every way an answer can be framed, cut short, refused or made hostile, what the
request looks like, the TLS handshake the checks judge, and how pages are decoded."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import tracemalloc
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioner.verify.http import (
    MAX_BODY,
    HttpClient,
    ProbeFailure,
    Response,
    page_text,
    redirect_result,
    user_agent,
)
from provisioner.verify.model import Status
from provisioner.verify.tls import make_contexts
from provisioner.verify.verifier import run

NAME = "dinkes.paserkab.go.id"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


@dataclass
class Served:
    """What the loopback server saw."""

    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    sent: int = 0  # body bytes written by a streaming answer
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


Answer = bytes | None  # None: stay silent


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: list,
                 close: bool, served: Served) -> None:
    served.connections += 1
    served.writers.append(writer)
    try:
        while answers:
            served.requests.append(await reader.readuntil(b"\r\n\r\n"))
            answer = answers.pop(0)
            if callable(answer):
                await answer(writer, served)
            elif answer is None:
                await asyncio.sleep(30)
            else:
                writer.write(answer)
                await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # keep the connection until the client drops it
    except (ConnectionError, asyncio.IncompleteReadError):
        pass


async def _get_all(answers: list, targets: list[str], *, close: bool = False,
                   timeout: float = 2.0, tls: ssl.SSLContext | None = None,
                   contexts=None, following: bool = False):
    served = Served()
    server = await asyncio.start_server(lambda r, w: _serve(r, w, answers, close, served),
                                        "127.0.0.1", 0, ssl=tls)
    port = served.port = server.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    client = HttpClient(contexts or make_contexts(), timeout, user_agent("mailto:ops@x.go.id"))
    site = client.site(f"{scheme}://{NAME}:{port}/", "127.0.0.1", NAME)
    outcomes: list = []
    for target in targets:
        try:
            outcomes.append(await (site.get_following(target) if following else site.get(target)))
        except ProbeFailure as failure:
            outcomes.append(failure)
    handshake = site.handshake
    site.close()
    await client.close()
    server.close()
    served.close()
    return outcomes, served, handshake


def get_all(answers: list, targets: tuple[str, ...] = ("/",), **kwargs):
    return run(_get_all(list(answers), list(targets), **kwargs))


def get(answer, **kwargs) -> Response | ProbeFailure:
    (outcome,), _, _ = get_all([answer], **kwargs)
    return outcome


# =========================================================================== framing

async def early_hints(writer: asyncio.StreamWriter, served: Served) -> None:
    """A 103 first, the answer a moment later (as a server that thinks first)."""
    writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(OK)
    await writer.drain()


# name: (what the server sends, close after it, status, body)
FRAMINGS = {
    "content-length": (OK, False, 200, b"hello"),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", False, 200, b"hello world"),
    "connection: close": (b"HTTP/1.1 301 Moved\r\nConnection: close\r\nLocation: https://x/\r\n"
                          b"Content-Length: 0\r\n\r\n", True, 301, b""),
    "body until the server closes": (b"HTTP/1.0 200 OK\r\n\r\nuntil close", True, 200,
                                     b"until close"),
    "no body: 204": (b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, b""),
    "103 Early Hints, then the answer": (early_hints, False, 200, b"hello"),
    "100 Continue, then 102, before the answer": (b"HTTP/1.1 100 Continue\r\n\r\n"
                                                  b"HTTP/1.1 102 Processing\r\n\r\n" + OK,
                                                  False, 200, b"hello"),
}


@pytest.mark.parametrize("answer, close, status, body", FRAMINGS.values(), ids=FRAMINGS.keys())
def test_answers_framed_every_way_are_read_whole(answer, close, status, body) -> None:
    response = get(answer, close=close)
    assert isinstance(response, Response), response
    assert (response.status, response.body) == (status, body)


def test_one_connection_serves_page_after_page() -> None:
    responses, served, _ = get_all([OK, OK, OK], ("/", "/a.html", "/b.html"))
    assert [r.body for r in responses] == [b"hello"] * 3
    assert served.connections == 1
    assert [r.split(b" ")[1] for r in served.requests] == [b"/", b"/a.html", b"/b.html"]


def test_a_closed_connection_is_opened_again_for_the_next_page() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
    responses, served, _ = get_all([closing, closing], ("/", "/a.html"), close=True)
    assert [r.status for r in responses] == [200, 200] and served.connections == 2


# =========================================================================== compression

@cache
def bomb() -> bytes:
    """gzip of 256 MiB of zeros (about 250 kB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([compressor.compress(zeros) for _ in range(256)] + [compressor.flush()])


def gzipped(body: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = compressor.compress(body) + compressor.flush()
    return b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%b" \
        % (len(data), data)


def test_a_gzip_body_is_decompressed() -> None:
    response = get(gzipped(b"<p>halo</p>"))
    assert response.body == b"<p>halo</p>" and response.text() == "<p>halo</p>"


def test_a_deflate_body_is_decompressed() -> None:
    data = zlib.compress(b"<p>halo</p>")
    response = get(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%b"
                   % (len(data), data))
    assert response.body == b"<p>halo</p>"


def test_a_decompression_bomb_stops_at_the_body_cap_without_inflating_the_rest() -> None:
    data = bomb()
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%b" \
        % (len(data), data)
    tracemalloc.start()
    try:
        response = get(answer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(response, Response), response
    assert response.body == bytes(MAX_BODY)
    assert peak < 32 * 1024 * 1024, f"{peak / 2**20:.0f} MiB allocated: the bomb was inflated"


def test_a_corrupt_gzip_body_is_an_error() -> None:
    response = get(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\n"
                   b"not gzip!")
    assert isinstance(response, ProbeFailure) and response.status is Status.ERROR


def test_a_50_mb_body_is_read_up_to_the_cap() -> None:
    async def huge(writer: asyncio.StreamWriter, served: Served) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n")
        chunk = b"x" * 65536
        while served.sent < 50_000_000:
            writer.write(chunk)
            await writer.drain()
            served.sent += len(chunk)

    response = get(huge)
    assert isinstance(response, Response), response
    assert response.body == b"x" * MAX_BODY


# =========================================================================== hostile headers

def test_sixty_thousand_headers_are_refused_not_parsed() -> None:
    failure = get(b"HTTP/1.1 200 OK\r\n" + b"X-Note: a\r\n" * 60_000
                  + b"Content-Length: 0\r\n\r\n")
    assert isinstance(failure, ProbeFailure), failure
    assert failure.status is Status.ERROR and "Too many headers" in failure.detail


def test_a_header_line_of_a_megabyte_is_refused() -> None:
    failure = get(b"HTTP/1.1 200 OK\r\nX-Note: " + b"a" * (1 << 20) + b"\r\n\r\n")
    assert isinstance(failure, ProbeFailure) and failure.status is Status.ERROR


def refused_by_a_strict_parser(outcome: Response | ProbeFailure) -> bool:
    """aiohttp's C parser reads obs-fold and bare LF in an answer (as browsers do); its
    strict Python parser (``python -X dev``) refuses them: an error, never an exception."""
    if aiohttp.helpers.DEBUG:
        assert isinstance(outcome, ProbeFailure) and outcome.status is Status.ERROR, outcome
        assert "not an HTTP answer" in outcome.detail
        return True
    assert isinstance(outcome, Response), outcome
    return False


def test_folded_headers_are_read() -> None:
    response = get(b"HTTP/1.1 200 OK\r\nX-Note: one\r\n two\r\nContent-Length: 2\r\n\r\nok")
    if not refused_by_a_strict_parser(response):
        assert response.status == 200 and response.body == b"ok"
        assert response.headers["x-note"].split() == ["one", "two"]


def test_bare_lf_line_ends_are_read() -> None:
    response = get(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-Note: lf\n\nok")
    if not refused_by_a_strict_parser(response):
        assert (response.status, response.body, response.headers["x-note"]) == (200, b"ok", "lf")


def test_repeated_headers_are_joined_under_lower_case_names() -> None:
    response = get(b"HTTP/1.1 200 OK\r\nX-Note: one\r\nx-note: two\r\nContent-Length: 0\r\n\r\n")
    assert response.headers["x-note"] == "one, two"


def test_header_bytes_that_are_not_utf8_are_kept_as_latin1() -> None:
    response = get(b"HTTP/1.1 200 OK\r\nX-Note: caf\xe9\r\nContent-Length: 0\r\n\r\n")
    assert response.headers["x-note"] == "caf\u00e9"


# =========================================================================== failures

async def drip(writer: asyncio.StreamWriter, served: Served) -> None:
    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.05)


# name: (what the server sends, close after it, status, words in the detail)
FAILURES = {
    "closed without a byte (nginx 444)": (b"", True, Status.FAIL, "without an answer"),
    "cut short": (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", True, Status.ERROR,
                  "body could not be read"),
    "not HTTP": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False, Status.ERROR, "not an HTTP answer"),
    "silent": (None, False, Status.ERROR, "no answer within 0.3s"),
    "drips the status line": (drip, False, Status.ERROR, "took longer than 0.6s"),
}


@pytest.mark.parametrize("answer, close, status, words", FAILURES.values(), ids=FAILURES.keys())
def test_a_broken_answer_is_a_probe_failure(answer, close, status, words) -> None:
    failure = get(answer, close=close, timeout=0.3)
    assert isinstance(failure, ProbeFailure), failure
    assert failure.status is status and words in failure.detail, failure.detail
    assert "\n" not in failure.detail


def test_a_refused_connection_fails() -> None:
    async def refused() -> ProbeFailure:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = HttpClient(make_contexts(), 1.0)
        try:
            await client.site(f"http://{NAME}:{port}/", "127.0.0.1", NAME).get("/")
        except ProbeFailure as failure:
            return failure
        finally:
            await client.close()

    failure = run(refused())
    assert failure.status is Status.FAIL and "connection refused" in failure.detail


# =========================================================================== redirects

def moved(location: bytes) -> bytes:
    return b"HTTP/1.1 301 Moved\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"


def test_redirects_on_the_same_site_are_followed() -> None:
    (outcome,), served, _ = get_all([moved(b"/beranda/"), OK], following=True)
    path, response = outcome
    assert (path, response.status, response.body) == ("/beranda/", 200, b"hello")
    assert served.connections == 1


def test_a_redirect_to_another_site_is_not_followed() -> None:
    (outcome,), served, _ = get_all([moved(b"https://elsewhere.example/")], following=True)
    path, response = outcome
    assert (path, response.status) == ("/", 301) and len(served.requests) == 1


def test_a_malformed_location_is_a_failure_not_an_exception() -> None:
    (failure,), _, _ = get_all([moved(b"https://[x")], following=True)
    assert isinstance(failure, ProbeFailure), failure
    assert failure.status is Status.FAIL and "malformed Location 'https://[x'" in failure.detail


def test_a_malformed_location_on_http_is_an_invalid_redirect() -> None:
    outcome = redirect_result(f"http://{NAME}/", 301, "https://[x")
    assert outcome.status is Status.FAIL and outcome.detail.startswith("redirection-invalid")


# =========================================================================== the request

def test_the_request_names_the_site_the_tool_and_its_contact() -> None:
    _, served, _ = get_all([OK])
    line, *headers = served.requests[0].decode("ascii").split("\r\n")
    assert line == "GET / HTTP/1.1"
    assert [h for h in headers if h.startswith("Host: ")] == [f"Host: {NAME}:{served.port}"]
    assert "User-Agent: provisioner-verify/2 (+mailto:ops@x.go.id)" in headers


def test_a_link_cannot_split_the_request() -> None:
    (response,), served, _ = get_all([OK], ("/a b\r\nX-Evil: 1\u00e9",))
    assert response.status == 200
    line, *headers = served.requests[0].decode("ascii").split("\r\n")
    assert line == "GET /a%20b%0D%0AX-Evil:%201%C3%A9 HTTP/1.1"
    assert not any("X-Evil" in h for h in headers)


# =========================================================================== TLS

@dataclass(frozen=True)
class Certs:
    ca: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    """A throwaway CA and a certificate for NAME."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "http test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=60))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "cert.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return Certs(folder / "ca.pem", server)


def test_a_trusted_site_costs_one_handshake_for_every_page(certs: Certs) -> None:
    names: list[str | None] = []
    certs.server.sni_callback = lambda _socket, name, _context: names.append(name)
    try:
        responses, served, handshake = get_all([OK, OK], ("/", "/a.html"), tls=certs.server,
                                               contexts=make_contexts((certs.ca,)))
    finally:
        certs.server.sni_callback = None
    assert [r.status for r in responses] == [200, 200] and served.connections == 1
    assert names == [NAME]  # the agency name as SNI, though the URL names the address
    assert handshake.verified and NAME in handshake.cert.names
    assert handshake.version in ("TLSv1.2", "TLSv1.3")


def test_an_untrusted_chain_is_recorded_and_the_pages_still_read(certs: Certs) -> None:
    responses, _, handshake = get_all([OK, OK], ("/", "/a.html"), tls=certs.server)
    assert [r.status for r in responses] == [200, 200]
    assert not handshake.verified and "local issuer" in handshake.chain_problem
    assert handshake.cert.names == (NAME,)


def test_the_handshake_is_judged_even_when_no_answer_follows(certs: Certs) -> None:
    (failure,), _, handshake = get_all([b""], close=True, tls=certs.server,
                                       contexts=make_contexts((certs.ca,)))
    assert isinstance(failure, ProbeFailure) and failure.status is Status.FAIL
    assert handshake is not None and handshake.verified and NAME in handshake.cert.names


UNRECOGNIZED_NAME_ALERT = b"\x15\x03\x03\x00\x02\x02\x70"  # TLS record: fatal alert 112


async def _handshake_with(answer: bytes) -> ProbeFailure:
    """A TLS client's first GET against a server that reads the ClientHello and sends
    ``answer`` (canned bytes), then closes."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(make_contexts(), 1.0)
    site = client.site(f"https://{NAME}:{port}/", "127.0.0.1", NAME)
    try:
        await site.get("/")
    except ProbeFailure as failure:
        assert site.handshake is None
        return failure
    finally:
        site.close()
        await client.close()
        server.close()


def test_a_server_that_refuses_the_handshake_fails() -> None:
    """nginx's ssl_reject_handshake, for a name it has no site for: an alert."""
    failure = run(_handshake_with(UNRECOGNIZED_NAME_ALERT))
    assert failure.status is Status.FAIL and "handshake refused" in failure.detail
    assert "UNRECOGNIZED_NAME" in failure.detail.upper()


def test_a_connection_closed_in_the_handshake_is_an_error() -> None:
    failure = run(_handshake_with(b""))
    assert failure.status is Status.ERROR and failure.detail.startswith("127.0.0.1:")


# =========================================================================== decoding

CAFE_UTF8 = "<p>caf\u00e9 \u201cok\u201d</p>".encode()

# name: (Content-Type, body, the text a browser shows)
DECODINGS = {
    "meta utf-16 on UTF-8 bytes: UTF-8": (
        "text/html", b"<meta charset=utf-16>" + CAFE_UTF8, "<meta charset=utf-16><p>caf\u00e9 "
                                                           "\u201cok\u201d</p>"),
    "charset=idna in the header: ignored": (
        "text/html; charset=idna", CAFE_UTF8, "<p>caf\u00e9 \u201cok\u201d</p>"),
    "charset=utf-7: ignored": (
        "text/html; charset=utf-7", b"<p>+ADw-script+AD4-</p>", "<p>+ADw-script+AD4-</p>"),
    "charset=rot13: ignored": ("text/html; charset=rot13", b"<p>halo</p>", "<p>halo</p>"),
    "charset=hz-gb-2312: ignored": ("text/html; charset=hz-gb-2312", b"<p>~{</p>", "<p>~{</p>"),
    "iso-8859-1 read as windows-1252": (
        "text/html; charset=iso-8859-1", b"<p>\x93Pelayanan\x94 caf\xe9</p>",
        "<p>\u201cPelayanan\u201d caf\u00e9</p>"),
    "meta ascii read as windows-1252": (
        "text/html", b"<meta charset=us-ascii><p>\x96</p>", "<meta charset=us-ascii><p>\u2013</p>"),
    "UTF-8 BOM beats the header": (
        "text/html; charset=iso-8859-1", b"\xef\xbb\xbf" + CAFE_UTF8,
        "<p>caf\u00e9 \u201cok\u201d</p>"),
    "UTF-16LE BOM": ("text/html", b"\xff\xfe" + "<p>caf\u00e9</p>".encode("utf-16-le"),
                     "<p>caf\u00e9</p>"),
    "http-equiv meta": (
        None, b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
              b"<p>\x93x\x94</p>",
        '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
        "<p>\u201cx\u201d</p>"),
    "header beats meta": ("text/html; charset=utf-8", b"<meta charset=windows-1252>" + CAFE_UTF8,
                          "<meta charset=windows-1252><p>caf\u00e9 \u201cok\u201d</p>"),
    "undeclared UTF-8": (None, CAFE_UTF8, "<p>caf\u00e9 \u201cok\u201d</p>"),
}


@pytest.mark.parametrize("content_type, body, text", DECODINGS.values(), ids=DECODINGS.keys())
def test_pages_are_decoded_as_browsers_do(content_type, body, text) -> None:
    assert page_text(content_type, body) == text


def test_an_undeclared_legacy_page_is_decoded_by_the_detector() -> None:
    body = ("<p>Persyaratan pelayanan \u201cKartu Tanda Penduduk\u201d \u2013 "
            "biaya: tidak dipungut biaya. " * 20 + "</p>").encode("cp1252")
    assert "\u201cKartu Tanda Penduduk\u201d \u2013 biaya" in page_text(None, body)


def test_the_text_is_decoded_once() -> None:
    response = Response(200, {"content-type": "text/html; charset=iso-8859-1"}, b"caf\xe9")
    assert response.text() is response.text() and response.text() == "caf\u00e9"


def test_a_page_text_over_the_wire_uses_the_header_charset() -> None:
    response = get(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=idna\r\n"
                   b"Content-Length: 7\r\n\r\ncaf\xc3\xa9!!")
    assert response.text() == "caf\u00e9!!"
