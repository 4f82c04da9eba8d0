"""Web servers that behave like broken or hostile agency sites, on loopback, for the tests
and the time-to-verdict benchmark.

Each ``KitSite`` is one site: a name, a loopback address of its own and a ``Kind`` (what
goes wrong). The kit listens on the address's port 443 (TLS with a certificate made here,
or plain TCP for the kinds that never get as far as TLS) and port 80 (a redirect to
https://, the kind itself, or nothing), and answers every request the way its kind
says. The responses are written byte by byte on purpose: they are what a correct client
must survive (a status line dripped, 60,000 headers, a decompression bomb, ...).

    kit = HostileKit(sites, Authority.create(folder))
    kit.start()          # a process of its own
    ...                  # trust kit.authority.ca_file (provisioner --ca)
    kit.close()

``python -m tests.hostile.server --prefix 127.0.24 --count 5`` serves every kind for a
while, to try a kind by hand (curl --resolve).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import ipaddress
import socket
import multiprocessing
import ssl
import struct
import threading
import zlib
from dataclasses import dataclass, field
from functools import cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..certkit import cert_pem, key_pem, new_ca, new_leaf, now

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31m[bold red]Dinkes[/] [/x]\x9b6n\u202e"
GOOD_PAGE = """<!DOCTYPE html><html lang="id"><head><meta charset="utf-8">
<title>{title}</title></head><body>
<header><h1>{heading}</h1><nav><a href="/">Beranda</a> <a href="/layanan">Layanan</a>{links}</nav></header>
<main><article>
<h2>Standar Pelayanan Izin Usaha Mikro</h2>
<h3>Persyaratan</h3><ul><li>Fotokopi KTP pemohon</li><li>Surat permohonan</li></ul>
<h3>Prosedur</h3><ol><li>Pemohon mengisi formulir</li><li>Petugas memverifikasi berkas</li></ol>
<h3>Jangka Waktu Penyelesaian</h3><p>3 (tiga) hari kerja sejak berkas lengkap</p>
<h3>Biaya/Tarif</h3><p>Tidak dipungut biaya (Rp 0)</p>
<h3>Produk Pelayanan</h3><p>Surat Izin Usaha Mikro</p>
<h3>Penanganan Pengaduan</h3><p>Kotak saran di loket, surel pengaduan@example.go.id, dan
<a href="https://www.lapor.go.id">SP4N-LAPOR!</a> (SMS 1708)</p>
<h3>Maklumat Pelayanan</h3><p>Dengan ini kami menyatakan sanggup menyelenggarakan pelayanan
sesuai standar pelayanan yang telah ditetapkan dan apabila tidak menepati janji ini kami
siap menerima sanksi sesuai peraturan perundang-undangan yang berlaku.</p>
<p>Dinas ini melayani masyarakat Kabupaten setiap hari kerja dengan ramah, cepat dan tanpa
pungutan liar; informasi lengkap tersedia di loket pelayanan terpadu.</p>
</article></main><footer><p>&copy; 2026 Pemerintah Kabupaten</p></footer></body></html>
"""
BAD_LINKS = ('<a href="http://[lapor">LAPOR</a> <a href="http://x:99999/">x</a> '
             '<a href="https://[x">y</a> <a href="http://%zz/">z</a> '
             '<a href="layanan\x00.html">nul</a> <a href="//[::1">v6</a>')


def page(title: str = "Layanan Publik | Dinas Contoh", heading: str = "Dinas Contoh",
         links: str = "") -> bytes:
    return GOOD_PAGE.format(title=title, heading=heading, links=links).encode()


# =========================================================================== certificates

@dataclass
class Authority:
    """The kit's CA (trusted by the code under test through ``ca_file``) and a second,
    untrusted one whose name is full of escape sequences and Rich markup."""

    folder: Path
    ca_file: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    rogue: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]

    @classmethod
    def create(cls, folder: Path) -> Authority:
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = new_ca("hostile kit test CA")
        ca_file = folder / "kit-ca.pem"
        ca_file.write_bytes(cert_pem(cert))
        return cls(folder, ca_file, cert, key, new_ca(f"Rogue CA {ESCAPES}"))

    def leaf_files(self, label: str, names: list[str], *, expired: bool = False,
                   rogue: bool = False, subject: str | None = None) -> tuple[Path, Path]:
        """A certificate chain and key for ``names``, written as PEM files."""
        issuer, issuer_key = self.rogue if rogue else (self.cert, self.key)
        start, end = ((now() - dt.timedelta(days=90), now() - dt.timedelta(days=2)) if expired
                      else (None, None))
        cert, key = new_leaf(issuer, issuer_key, names, not_before=start, not_after=end,
                             subject=subject)
        chain = self.folder / f"{label}.pem"
        key_file = self.folder / f"{label}.key"
        chain.write_bytes(cert_pem(cert, issuer))
        key_file.write_bytes(key_pem(key))
        return chain, key_file


# =========================================================================== behaviours

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FOREVER = 3600.0


async def read_request(reader: asyncio.StreamReader) -> str:
    """The request's target (the kit answers by kind, not by what is asked)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode("latin-1") if len(parts) > 1 else "/"


def head(status: str, headers: list[tuple[str, str]], eol: str = "\r\n") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return eol.join(lines).encode("latin-1")


def html_headers(body: bytes, content_type: str = "text/html; charset=utf-8",
                 *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Content-Type", content_type), ("Content-Length", str(len(body))),
            ("Connection", "close"), ("Strict-Transport-Security", "max-age=31536000"), *extra]


def answer(body: bytes, status: str = "200 OK", content_type: str = "text/html; charset=utf-8",
           *extra: tuple[str, str]) -> Handler:
    """Every request gets this one response, then the connection closes."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head(status, html_headers(body, content_type, *extra)) + body)
        await writer.drain()
    return handle


def raw(data: bytes | Callable[[], bytes]) -> Handler:
    """These bytes, exactly, whatever was asked."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(data() if callable(data) else data)
        await writer.drain()
    return handle


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, never read, never answer."""
    await asyncio.sleep(FOREVER)


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A status line and headers one byte at a time, a quarter second apart."""
    await read_request(reader)
    body = page()
    for byte in head("200 OK", html_headers(body)) + body:
        if writer.is_closing():
            return
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.25)


async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 50 MB body of blanks after a page head with no content."""
    await read_request(reader)
    size = 50 * 1024 * 1024
    start = b"<!DOCTYPE html><html><head><title>x</title></head><body>"
    writer.write(head("200 OK", html_headers(b"x" * size)) + start)
    chunk = b" " * 65536
    for _ in range((size - len(start)) // len(chunk)):
        if writer.is_closing():
            return
        writer.write(chunk)
        await writer.drain()


@cache
def bomb_body() -> bytes:
    """256 MiB of zeros, gzip-compressed (about 250 KB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()


def redirect(location: str, status: str = "302 Found") -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = await read_request(reader)
        where = location.format(other="/b" if target == "/" else "/")
        writer.write(head(status, [("Location", where), ("Content-Length", "0"),
                                   ("Connection", "close")]))
        await writer.drain()
    return handle


async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    body = page()
    writer.write(head("103 Early Hints", [("Link", "</style.css>; rel=preload; as=style")])
                 + head("200 OK", html_headers(body)) + body)
    await writer.drain()


def reset_after(sent: int) -> Handler:
    """Promise a 100 KB page, send ``sent`` bytes of it, then reset the connection."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if sent:
            await read_request(reader)
            writer.write(head("200 OK", html_headers(b"x" * 100_000)) + page()[:sent])
            await writer.drain()
        _reset(writer)
    return handle


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
THIN_PAGE = (b"<!DOCTYPE html><html><head><meta charset=utf-8><title>Dinas Contoh</title></head>"
             b"<body><main><h1>Selamat datang di situs Dinas Contoh Kabupaten</h1><p>"
             + b"Informasi kegiatan dinas dan berita terbaru untuk masyarakat. " * 20
             + b"</p></main></body></html>")


async def deep_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A home page that publishes little, and a 100,000-deep standar-pelayanan.json."""
    target = await read_request(reader)
    body, kind = ((DEEP_JSON, "application/json") if target.endswith(".json")
                  else (THIN_PAGE, "text/html"))
    writer.write(head("200 OK", html_headers(body, kind)) + body)
    await writer.drain()


def _many_headers() -> bytes:
    body = page()
    return (head("200 OK", html_headers(body) + [(f"X-Filler-{i}", "v") for i in range(60_000)])
            + body)


def _folded() -> bytes:
    body = page()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/html;\r\n charset=utf-8\r\nX-Folded: a\r\n"
            b"\tb\r\n c\r\n" + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body)


def _gzipped() -> bytes:
    body = gzip.compress(page())
    return head("200 OK", html_headers(body, "text/html; charset=utf-8",
                                       ("Content-Encoding", "gzip"))) + body


def _bomb() -> bytes:
    body = bomb_body()
    return head("200 OK", html_headers(body, "text/html", ("Content-Encoding", "gzip"))) + body


# =========================================================================== kinds

@dataclass(frozen=True)
class Kind:
    """A way for a site to be broken: what port 443 does (``tls``: good, wrong-name,
    expired, rogue, plain (no TLS), none (refused)) and port 80 (``plain``: redirect, same
    (the behaviour again, without TLS), none)."""

    name: str
    handler: Handler
    tls: str = "good"
    plain: str = "redirect"
    http_port: int | None = None  # served only over http:// on this port (no 443, no 80)


def _kinds() -> dict[str, Kind]:
    title_escapes = page(title=f"Dinas {ESCAPES} Kesehatan", heading=f"Dinkes {ESCAPES}")
    nested = page().replace(b"<main>", b"<main>" + b"<div>" * 5000).replace(
        b"</main>", b"</div>" * 5000 + b"</main>")
    kinds = [
        Kind("hang", hang, tls="plain", plain="same"),
        Kind("drip", drip),
        Kind("huge", huge),
        Kind("gzip", raw(_gzipped)),
        Kind("bomb", raw(_bomb)),
        Kind("loop", redirect("/")),
        Kind("pingpong", redirect("{other}")),
        Kind("bad-location", redirect("https://[x", "301 Moved Permanently")),
        Kind("early-hints", early_hints),
        Kind("folded", raw(_folded)),
        Kind("bare-lf", raw(lambda: head("200 OK", html_headers(page()), "\n") + page())),
        Kind("many-headers", raw(_many_headers)),
        Kind("long-header", raw(lambda: head("200 OK", html_headers(
            page(), "text/html", ("X-Long", "a" * 1_000_000))) + page())),
        Kind("nul-header", raw(lambda: head("200 OK", html_headers(
            page(), "text/html", ("X-Nul", "a\x00b"))) + page())),
        Kind("bad-status", raw(b"HTTP/1.1 abc\r\nContent-Length: 0\r\n\r\n")),
        Kind("charset-idna", answer(page(), "200 OK", "text/html; charset=idna")),
        Kind("charset-utf7", answer(page(), "200 OK", "text/html; charset=utf-7")),
        Kind("charset-unknown", answer(page(), "200 OK", "text/html; charset=x-no-such")),
        Kind("meta-utf16", answer(page().replace(b'charset="utf-8"', b"charset=utf-16"),
                                  "200 OK", "text/html")),
        Kind("bad-links", answer(page(links=BAD_LINKS))),
        Kind("deep-json", deep_json),
        Kind("deep-nesting", answer(nested)),
        Kind("huge-title", answer(page(title="A" * 200_000))),
        Kind("ordinary", answer(page())),  # nothing wrong: the control
        Kind("escapes", answer(title_escapes)),
        Kind("rogue-cert", answer(page()), tls="rogue"),
        Kind("wrong-name", answer(page()), tls="wrong-name"),
        Kind("expired", answer(page()), tls="expired"),
        Kind("http-500", answer(b"<h1>Internal Server Error</h1>", "500 Internal Server Error")),
        Kind("empty", answer(b"")),
        Kind("refused", hang, tls="none", plain="none"),
        Kind("reset-at-accept", reset_after(0), tls="plain", plain="same"),
        Kind("reset-mid-body", reset_after(1000)),
        Kind("closed", close_at_once),
        Kind("not-tls", answer(b"plain", "400 Bad Request"), tls="plain"),
        Kind("http-only", answer(page()), tls="none", plain="none", http_port=8080),
    ]
    return {k.name: k for k in kinds}


KINDS = _kinds()


@dataclass(frozen=True)
class KitSite:
    kind: Kind
    name: str  # the host name its certificate is for (and its URL's)
    address: str
    also_for: tuple[str, ...] = ()  # more names its certificate is for

    @property
    def url(self) -> str:
        if self.kind.http_port:
            return f"http://{self.name}:{self.kind.http_port}/"
        return f"https://{self.name}/"


# =========================================================================== server

@dataclass
class HostileKit:
    """Serves its sites from processes of its own (forked: the code under test, often in
    the test's own process, must not share an interpreter lock with them) until
    ``close``; ``processes`` > 1 deals the sites out among that many, so that a site busy
    sending 50 MB does not hold up the others' answers."""

    sites: list[KitSite]
    authority: Authority
    processes: int = 1
    _children: list[multiprocessing.Process] = field(default_factory=list)
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)

    def start(self) -> HostileKit:
        bomb_body()  # made once, before any client waits for it
        context = multiprocessing.get_context("fork")
        for share in range(self.processes):
            parent, child = context.Pipe()
            process = context.Process(target=self._serve_forever,
                                      args=(self.sites[share::self.processes], child),
                                      name="hostile-kit", daemon=True)
            process.start()
            self._children.append(process)
            failure = parent.recv() if parent.poll(60) else "no answer within 60 s"
            if failure:
                self.close()
                raise RuntimeError(f"the hostile kit did not start: {failure}")
        return self

    def _serve_forever(self, sites: list[KitSite], ready: Connection) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._listen(sites))
        except BaseException as exc:  # noqa: BLE001 - told to the starting process
            ready.send(f"{type(exc).__name__}: {exc}")
            return
        ready.send("")
        loop.run_forever()

    async def _listen(self, sites: list[KitSite]) -> None:
        for site in sites:
            kind = site.kind
            if kind.http_port:
                await self._serve(kind.handler, site.address, kind.http_port, None)
                continue
            if kind.tls != "none":
                context = None if kind.tls == "plain" else self._context(site)
                await self._serve(kind.handler, site.address, 443, context)
            if kind.plain != "none":
                plain = kind.handler if kind.plain == "same" else \
                    redirect(f"https://{site.name}/", "301 Moved Permanently")
                await self._serve(plain, site.address, 80, None)

    def _context(self, site: KitSite) -> ssl.SSLContext:
        tls = site.kind.tls
        names = ["www.example.org"] if tls == "wrong-name" else [site.name, *site.also_for]
        chain, key = self.authority.leaf_files(
            f"{site.kind.name}-{site.address}", names, expired=tls == "expired",
            rogue=tls == "rogue", subject=ESCAPES if tls == "rogue" else None)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key)
        return context

    async def _serve(self, handler: Handler, address: str, port: int,
                     context: ssl.SSLContext | None) -> None:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError, ssl.SSLError, asyncio.CancelledError):
                pass  # the client gave up (what the kit is for), or the kit closes
            finally:
                if not writer.transport.is_closing():
                    writer.transport.abort()

        server = await asyncio.start_server(guarded, address, port, ssl=context,
                                            reuse_address=True, backlog=1024,
                                            ssl_handshake_timeout=30 if context else None)
        self._servers.append(server)

    def close(self) -> None:
        for process in self._children:
            if process.is_alive():
                process.terminate()
            process.join(30)


def kit_sites(prefix: str, first: int, zone: str, kinds: list[str] | None = None,
              copies: int = 1) -> list[KitSite]:
    """``copies`` sites of each kind, each on an address of its own from PREFIX.FIRST on
    (running on into the next /24s), named h-KIND[-N].ZONE."""
    chosen = [KINDS[k] for k in (kinds or KINDS)]
    start = ipaddress.IPv4Address(f"{prefix}.{first}")
    sites = []
    for n in range(copies):
        for kind in chosen:
            suffix = f"-{n}" if copies > 1 else ""
            sites.append(KitSite(kind, f"h-{kind.name}{suffix}.{zone}",
                                 str(start + len(sites))))
    assert all(ipaddress.IPv4Address(s.address).is_loopback for s in sites), "loopback only"
    return sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="127.0.24", help="three octets inside 127/8")
    parser.add_argument("--first", type=int, default=150, help="last octet of the first site")
    parser.add_argument("--zone", default="hostile.test")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/hostile-kit"))
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    sites = kit_sites(args.prefix, args.first, args.zone)
    kit = HostileKit(sites, Authority.create(args.folder)).start()
    for site in sites:
        print(f"{site.kind.name:16} {site.address:15} {site.url}")
    print(f"CA: {kit.authority.ca_file}")
    try:
        threading.Event().wait(args.seconds)
    finally:
        kit.close()


if __name__ == "__main__":
    main()
