"""One request outside a sweep (provisioner.verify.http.request_once) against a real
loopback server (http.server on 127.0.0.1, plain and TLS): what it sends, what it
returns, and its failures in the verifier's words."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from provisioner.verify.http import MAX_BODY, USER_AGENT, ProbeFailure, request_once
from provisioner.verify.model import Status
from tests.certkit import cert_pem, key_pem, new_ca, new_leaf

NAME = "dinkes.paserkab.go.id"


@dataclass
class Seen:
    """The requests the server saw: (method, path, headers, body)."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    """/ok: 200 "hello"; /moved: 301; /missing: 404; /big: more than MAX_BODY;
    /hangup: the connection closed without an answer; /echo (POST): the body back."""

    seen: Seen

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _answer(self, body: bytes) -> None:
        self.seen.requests.append((self.command, self.path, dict(self.headers.items()), body))
        if self.path == "/hangup":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        status, headers, content = {
            "/ok": (200, {"Content-Type": "text/plain"}, b"hello"),
            "/moved": (301, {"Location": "/ok"}, b""),
            "/big": (200, {}, b"x" * (MAX_BODY + 1000)),
            "/echo": (200, {"Content-Type": "application/json"}, body),
        }.get(self.path, (404, {}, b"not here"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


def serve(context: ssl.SSLContext | None = None) -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    handler = type("SeenHandler", (Handler,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[tuple[str, Seen]]:
    yield from serve()


@dataclass(frozen=True)
class Tls:
    base: str
    seen: Seen
    ca_file: Path


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Tls]:
    ca, ca_key = new_ca("request_once test CA")
    leaf, key = new_leaf(ca, ca_key, ["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(cert_pem(ca))
    (tmp_path / "chain.pem").write_bytes(cert_pem(leaf, ca))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    for base, seen in serve(context):
        yield Tls(base, seen, tmp_path / "ca.pem")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_get_returns_status_headers_and_body_with_the_host_header_given(plain) -> None:
    base, seen = plain
    response = request_once("GET", f"{base}/ok", timeout=5, headers={"Host": NAME})
    assert (response.status, response.body, response.text()) == (200, b"hello", "hello")
    assert response.headers["content-type"] == "text/plain"
    (method, path, headers, _body), = seen.requests
    assert (method, path, headers["Host"], headers["User-Agent"]) == ("GET", "/ok", NAME,
                                                                      USER_AGENT)


def test_a_post_sends_its_json_body(plain) -> None:
    base, seen = plain
    response = request_once("POST", f"{base}/echo", timeout=5, json={"token": "abc", "n": 1})
    assert json.loads(response.body) == {"token": "abc", "n": 1}
    (method, _path, headers, body), = seen.requests
    assert method == "POST" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"token": "abc", "n": 1}


@pytest.mark.parametrize("path, status", [("/missing", 404), ("/moved", 301)])
def test_any_status_is_an_answer_and_no_redirect_is_followed(plain, path, status) -> None:
    base, seen = plain
    assert request_once("GET", f"{base}{path}", timeout=5).status == status
    assert [p for _m, p, _h, _b in seen.requests] == [path]


def test_a_body_is_read_up_to_the_verifiers_cap(plain) -> None:
    base, _seen = plain
    assert len(request_once("GET", f"{base}/big", timeout=5).body) == MAX_BODY


def test_a_refused_connection_is_a_failure() -> None:
    port = free_port()
    with pytest.raises(ProbeFailure) as failure:
        request_once("GET", f"http://127.0.0.1:{port}/", timeout=5)
    assert failure.value.status is Status.FAIL
    assert failure.value.detail == f"127.0.0.1:{port}: connection refused"


def test_a_connection_closed_without_an_answer_names_the_method(plain) -> None:
    base, _seen = plain
    with pytest.raises(ProbeFailure) as failure:
        request_once("POST", f"{base}/hangup", timeout=5, json={})
    assert failure.value.detail == ("POST /hangup: the server closed the connection "
                                    "without an answer")


def test_https_is_trusted_through_the_context_given(tls: Tls) -> None:
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    assert request_once("GET", f"{tls.base}/ok", timeout=5, ssl_context=context).body == b"hello"


def test_https_from_an_unknown_ca_is_a_handshake_failure(tls: Tls) -> None:
    with pytest.raises(ProbeFailure) as failure:
        request_once("GET", f"{tls.base}/ok", timeout=5)
    assert failure.value.status is Status.FAIL
    assert "handshake failed" in failure.value.detail
    assert "certificate verify failed" in failure.value.detail
