"""The verifier's HTTP/1.1 client against a loopback server that answers with canned bytes:
every way an answer can be framed, cut short or refused, and what the request looks like."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.verify import run
from provisioner.verify.http import ProbeFailure, Response, open_plain
from provisioner.verify.model import Status

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def _exchange(answers: list[bytes], close: bool, targets: list[str], timeout: float = 2.0
                    ) -> tuple[list[Response | ProbeFailure], list[bytes], bool]:
    """Serve `answers` one per request (then close, if asked) and GET each target over one
    connection: (responses or failures, the requests the server read, reusable at the end)."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # keep the connection until the client closes it

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = await open_plain("127.0.0.1", port, "dinkes.paserkab.go.id", timeout)
    outcomes: list[Response | ProbeFailure] = []
    for target in targets:
        try:
            outcomes.append(await connection.get(target, timeout))
        except ProbeFailure as failure:
            outcomes.append(failure)
    reusable = connection.reusable
    connection.close()
    server.close()
    return outcomes, requests, reusable


def exchange(answers: list[bytes], close: bool = False, targets: tuple[str, ...] = ("/",),
             timeout: float = 2.0):
    return run(_exchange(answers, close, list(targets), timeout))


# name: (what the server sends, close after it, status, body, reusable)
FRAMINGS = {
    "content-length": ([OK], False, 200, b"hello", True),
    "chunked": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"], False, 200, b"hello world", True),
    "connection: close": ([b"HTTP/1.1 301 Moved\r\nConnection: close\r\nLocation: https://x/\r\n"
                           b"Content-Length: 0\r\n\r\n"], True, 301, b"", False),
    "body until the server closes": ([b"HTTP/1.0 200 OK\r\n\r\nuntil close"], True, 200,
                                     b"until close", False),
    "no body: 204": ([b"HTTP/1.1 204 No Content\r\n\r\n"], False, 204, b"", True),
}


@pytest.mark.parametrize("answers, close, status, body, reusable", FRAMINGS.values(),
                         ids=FRAMINGS.keys())
def test_answers_framed_every_way_are_read_whole(answers, close, status, body, reusable) -> None:
    (response,), _, still_open = exchange(answers, close)
    assert isinstance(response, Response), response
    assert (response.status, response.body, still_open) == (status, body, reusable)


def test_one_connection_serves_page_after_page() -> None:
    responses, requests, reusable = exchange([OK, OK, OK], targets=("/", "/a.html", "/b.html"))
    assert [r.body for r in responses] == [b"hello"] * 3 and reusable
    assert [r.split(b" ")[1] for r in requests] == [b"/", b"/a.html", b"/b.html"]


# name: (what the server sends, close after it, status, words in the detail)
FAILURES = {
    "closed without a byte (nginx 444)": ([b""], True, Status.FAIL, "without an answer"),
    "cut short": ([b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"], True, Status.ERROR,
                  "middle of the answer"),
    "not HTTP": ([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], False, Status.ERROR, "GET /"),
    "silent": ([], False, Status.ERROR, "no answer within 0.3s"),
}


@pytest.mark.parametrize("answers, close, status, words", FAILURES.values(), ids=FAILURES.keys())
def test_a_broken_answer_is_a_probe_failure(answers, close, status, words) -> None:
    (failure,), _, reusable = exchange(answers, close, timeout=0.3)
    assert isinstance(failure, ProbeFailure), failure
    assert failure.status is status and words in failure.detail, failure.detail
    assert not reusable


def test_repeated_headers_are_joined_under_lower_case_names() -> None:
    (response,), _, _ = exchange([b"HTTP/1.1 200 OK\r\nX-Note: one\r\nx-note: two\r\n"
                                  b"Content-Length: 0\r\n\r\n"])
    assert response.headers["x-note"] == "one, two"


def test_a_link_cannot_split_the_request() -> None:
    (response,), (sent,), _ = exchange([OK], targets=("/a b\r\nX-Evil: 1\u00e9",))
    assert response.status == 200
    line, *headers = sent.decode("ascii").split("\r\n")
    assert line == "GET /a%20b%0D%0AX-Evil:%201%C3%A9 HTTP/1.1"
    assert "Host: dinkes.paserkab.go.id" in headers and not any("X-Evil" in h for h in headers)
