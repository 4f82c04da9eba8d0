"""`provisioner verify http://...` against corpus sites served by a real HTTP server.

Three sites of the labelled corpus (tests/corpus) are served from loopback by Python's
http.server, each on its own ephemeral port of 127.0.0.1, with the statuses, redirects
and query-string routes their labels.yml gives. The CLI verifies each URL as an
operator would; the crawl must find the standards two and three clicks deep, read a
windows-1252 table site behind query-string links, and judge every item as labelled.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from tests.corpus.kit import CORPUS, Labels, corpus_sites, resolve

from .conftest import TEST_NET, make_test_inventory, run_cli

pytestmark = pytest.mark.integration

SITES = ("dinkes-wordpress", "bkpsdm-tiga-klik", "dpmptsp-tabel-lama", "diskan-pengalihan")


def handler_for(labels: Labels) -> type[BaseHTTPRequestHandler]:
    class Corpus(BaseHTTPRequestHandler):
        requested: list[str] = []

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            Corpus.requested.append(self.path)
            status, headers, body = resolve(labels, self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Corpus


@contextmanager
def served(labels: Labels) -> Iterator[tuple[str, list[str]]]:
    handler = handler_for(labels)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus-verify")
    return make_test_inventory(root / "inventory", TEST_NET, agencies=False), root / "state"


@pytest.fixture(scope="module")
def verified(inventory: tuple[Path, Path]) -> dict[str, tuple[dict, list[str]]]:
    labels = {s.name: s for s in corpus_sites() if s.name in SITES}
    assert set(labels) == set(SITES), f"missing in {CORPUS}"
    documents = {}
    for name in SITES:
        with served(labels[name]) as (url, requested):
            result = run_cli(*inventory, "verify", url, "--format", "json", "--timeout", "5")
            assert result.stdout.strip(), result.stderr
            documents[name] = json.loads(result.stdout), list(requested)
    return documents


@pytest.mark.parametrize("name", SITES)
def test_every_item_judged_as_labelled(verified, name: str) -> None:
    document, _ = verified[name]
    labels = next(s for s in corpus_sites() if s.name == name)
    assert document["publication"]["components"] == labels.expected
    assert document["active"] is False  # plain http:// on another port: no HTTPS
    for item, evidence in document["publication"]["evidence"].items():
        assert labels.expected[item] and len(evidence["snippet"]) <= 160


def test_standards_two_and_three_clicks_deep_are_found(verified) -> None:
    two, requested = verified["dinkes-wordpress"]
    assert two["publication"]["evidence"]["persyaratan"]["page"] == "/layanan/penerbitan-sip/"
    assert requested.index("/layanan/") < requested.index("/layanan/penerbitan-sip/")
    assert "/robots.txt" in requested
    three, _ = verified["bkpsdm-tiga-klik"]
    assert three["publication"]["evidence"]["waktu"]["page"] \
        == "/informasi-publik/standar-pelayanan/kenaikan-pangkat.html"


def test_the_image_only_maklumat_is_named_in_a_warning(verified) -> None:
    document, _ = verified["dinkes-wordpress"]
    warning = next(c for c in document["checks"] if c["id"] == "publication.documents")
    assert warning["status"] == "warn"
    assert "maklumat-pelayanan-2024.jpg" in warning["detail"]


def test_windows_1252_pages_behind_query_links_and_redirects(verified) -> None:
    table, requested = verified["dpmptsp-tabel-lama"]
    assert "/index.php?hal=izin-reklame" in requested
    assert "–" in table["publication"]["evidence"]["prosedur"]["snippet"]  # 0x96 decoded
    moved, requested = verified["diskan-pengalihan"]
    assert "/beranda/" in requested and "/layanan/" in requested  # 302 and 301 followed
    assert moved["publication"]["evidence"]["biaya"]["page"] == "/layanan/"
