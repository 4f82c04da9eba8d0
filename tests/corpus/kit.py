"""The labelled corpus of agency sites: reading it, crawling a site of it, comparing.

Each folder under tests/corpus/ is one site written for the corpus (not from our
templates): its pages as files and a ``labels.yml`` with what an Ombudsman assessor
would answer for each scored item, the documents the verifier must name in its warning,
and whether the home page is real content. URL paths map to files: ``/`` to index.html,
``/a/`` to a/index.html, ``/a.html`` to a.html, ``/a`` to a.html or a/index.html;
``routes`` in labels.yml maps other URLs (``/index.php?hal=layanan``) to files,
``status`` gives a URL a status (and ``location``) instead.

``CorpusSite`` serves a folder with the interface of verify.http's ``Site`` (``get``,
``get_following``, ``base_url``): pure code, used by the unit test and the accuracy
benchmark; the integration test serves the same folders over a real HTTP server.
"""

from __future__ import annotations

import asyncio
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from provisioner.verify.content import ScoringRules, analyse_page, not_content_reason
from provisioner.verify.crawl import read_publication
from provisioner.verify.http import Response
from provisioner.verify.model import Publication

CORPUS = Path(__file__).resolve().parent
ITEMS = ("persyaratan", "prosedur", "waktu", "biaya", "produk", "pengaduan", "maklumat", "lapor")


@dataclass(frozen=True)
class Labels:
    name: str
    folder: Path
    description: str
    expected: dict[str, bool]
    warnings: tuple[str, ...]  # document names the warning must name
    content: bool  # the home page is real content
    routes: dict[str, str]
    status: dict[str, dict]


def corpus_sites() -> list[Labels]:
    return [_labels(folder) for folder in sorted(CORPUS.iterdir())
            if (folder / "labels.yml").is_file()]


def _labels(folder: Path) -> Labels:
    data = yaml.safe_load((folder / "labels.yml").read_text(encoding="utf-8"))
    expected = data["expected"]
    if set(expected) != set(ITEMS):
        raise ValueError(f"{folder.name}/labels.yml: expected must name exactly {ITEMS}")
    return Labels(folder.name, folder, data.get("description", ""),
                  {item: bool(expected[item]) for item in ITEMS},
                  tuple(data.get("warnings") or ()), bool(data.get("content", True)),
                  dict(data.get("routes") or {}), dict(data.get("status") or {}))


def resolve(labels: Labels, target: str) -> tuple[int, dict[str, str], bytes]:
    """What the site answers for a request target: (status, headers, body)."""
    if target in labels.status:
        answer = labels.status[target]
        headers = {"location": answer["location"]} if "location" in answer else {}
        return int(answer["code"]), headers, b"error"
    file = _file_for(labels, target)
    if file is None:
        return 404, {"content-type": "text/html"}, b"<html><title>404 Not Found</title></html>"
    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if kind == "text/html":
        kind = "text/html"  # the charset is the page's own business (meta, bytes)
    return 200, {"content-type": kind}, file.read_bytes()


def _file_for(labels: Labels, target: str) -> Path | None:
    if target in labels.routes:
        return labels.folder / labels.routes[target]
    path = target.split("?", 1)[0].split("#", 1)[0]
    rel = path.lstrip("/")
    if ".." in rel.split("/") or rel == "labels.yml":
        return None
    candidates = ([labels.folder / rel / "index.html"] if path.endswith("/") or not rel
                  else [labels.folder / rel, labels.folder / f"{rel}.html",
                        labels.folder / rel / "index.html"])
    return next((c for c in candidates if c.is_file()), None)


@dataclass
class CorpusSite:
    """A corpus folder behind the interface of verify.http.Site (no network)."""

    labels: Labels
    base_url: str = ""
    requested: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_url = self.base_url or f"https://{self.labels.name}.paserkab.go.id/"

    async def get(self, target: str) -> Response:
        self.requested.append(target)
        status, headers, body = resolve(self.labels, target)
        return Response(status=status, headers=headers, body=body)

    async def get_following(self, target: str) -> tuple[str, Response]:
        response = await self.get(target)
        for _ in range(3):
            location = response.headers.get("location")
            if not (300 <= response.status < 400 and location):
                break
            target = location
            response = await self.get(target)
        return target, response


@dataclass(frozen=True)
class Verdict:
    labels: Labels
    publication: Publication
    content_reason: str | None
    requested: tuple[str, ...]

    def wrong(self) -> list[str]:
        """Every judgment that disagrees with the labels, one line each."""
        wrong = []
        for item in ITEMS:
            got = self.publication.components[item]
            if got != self.labels.expected[item]:
                evidence = self.publication.evidence.get(item)
                wrong.append(f"{self.labels.name}: {item} judged {got}, labelled "
                             f"{self.labels.expected[item]}" + (f" ({evidence})" if evidence else ""))
        return wrong

    def wrong_warnings(self) -> list[str]:
        named = " ".join(self.publication.documents)
        missing = [w for w in self.labels.warnings if w not in named]
        unexpected = bool(self.publication.documents) and not self.labels.warnings \
            and not all(self.publication.components[i] for i in ITEMS[:7])
        if missing or unexpected:
            return [f"{self.labels.name}: documents {list(self.publication.documents)}, "
                    f"labelled {list(self.labels.warnings)}"]
        return []

    def wrong_content(self) -> list[str]:
        if (self.content_reason is None) != self.labels.content:
            return [f"{self.labels.name}: content reason {self.content_reason!r}, labelled "
                    f"{'content' if self.labels.content else 'not content'}"]
        return []


async def verdict_of(labels: Labels, rules: ScoringRules) -> Verdict:
    """Read a corpus site as the verifier does: the home page, then the crawl."""
    site = CorpusSite(labels)
    path, response = await site.get_following("/")
    home = analyse_page(response.text(), rules)
    publication = (await read_publication(site, path, home, rules) if response.status == 200
                   else rules.nothing_published)
    return Verdict(labels, publication, not_content_reason(home, rules), tuple(site.requested))


def verdicts(rules: ScoringRules) -> list[Verdict]:
    async def every() -> list[Verdict]:
        return [await verdict_of(labels, rules) for labels in corpus_sites()]
    return asyncio.run(every())


def accuracy(results: list[Verdict]) -> dict[str, float]:
    """Share of right judgments per item and overall (0-1)."""
    figures = {}
    for item in ITEMS:
        right = sum(v.publication.components[item] == v.labels.expected[item] for v in results)
        figures[item] = right / len(results) if results else 0.0
    figures["overall"] = sum(figures[i] for i in ITEMS) / len(ITEMS)
    return figures
