"""The crawl: which pages of a site are read for the publication score, and in what order.

What a visitor finds (SERVICE_STANDARD.md "What counts as published"): any same-site page
reached by following links from the home page, standards often two or three clicks deep
(home -> Layanan -> one page per service). The crawl is breadth-first to
``discovery.max_depth`` clicks, at most ``discovery.max_pages`` pages, the most promising
links first (their text, the block around a "klik di sini", their path), robots.txt
honoured; when items are still missing after the links, the pages the toolkit's
standar-pelayanan.json names and those sitemap.xml lists are read too. It stops as soon
as every item is found, skips a page that cannot be read, and gives up after a few such
pages or once the site has sent ``discovery.max_total_chars`` (an answer other than 200 only
costs its place in the page budget).

Pages are fetched one at a time through the site's ``Site`` (verify.http: one connection,
within the per-address limit the caller holds); what they publish is judged by
verify.content.
"""

from __future__ import annotations

import heapq
import re
from urllib.parse import urljoin
from urllib.robotparser import RobotFileParser

from lxml import etree

from .content import (
    Link,
    PageAnalysis,
    Published,
    ScoringRules,
    missing_items,
    pages_from_data,
    ranked_links,
    read_published,
    same_site_path,
    score_publication,
)
from .http import Site
from .model import Publication
from .tls import ProbeFailure

REDIRECTS = frozenset((301, 302, 303, 307, 308))
XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]{0,200}\?>")
NOT_A_PAGE = ("image/", "application/pdf", "application/zip", "application/octet-stream",
              "video/", "audio/", "font/")
SITEMAP_PARSER = dict(resolve_entities=False, no_network=True, huge_tree=False,
                      load_dtd=False, dtd_validation=False, remove_comments=True,
                      remove_pis=True)


async def read_publication(site: Site, home_path: str, home: PageAnalysis,
                           rules: ScoringRules) -> Publication:
    """Crawl the site from its home page (already read) and score what its pages publish."""
    crawl = Crawl(site, home_path, home, rules)
    await crawl.run()
    return score_publication(crawl.pages, rules, crawl.notes)


class Crawl:
    """One site's crawl: the pages read so far and the frontier, best link first."""

    def __init__(self, site: Site, home_path: str, home: Published, rules: ScoringRules):
        self.site, self.rules, self.limits = site, rules, rules.discovery
        self.home_url = urljoin(site.base_url, home_path)
        self.pages: dict[str, Published] = {home_path: home}
        self.seen = {home_path}
        # (rank, depth, order, path, rank once the items the link is for are found)
        self.frontier: list[tuple[int, int, int, str, int | None]] = []
        self.robots: RobotFileParser | None = None
        self.notes: list[str] = []
        self.page_requests = self.failures = self.chars = 0
        self._follow(home.links, self.home_url, depth=1, unmatched="all")

    @property
    def done(self) -> bool:
        return not missing_items(self.pages, self.rules)

    @property
    def exhausted(self) -> bool:
        """No more reading allowed: page, failure or size budget spent (the home page, read
        by the caller, is one of the pages)."""
        return (1 + self.page_requests >= self.limits.max_pages
                or self.failures >= self.limits.max_failed_pages
                or self.chars >= self.limits.max_total_chars)

    async def run(self) -> None:
        if self.done:
            return
        self.robots = await self._robots()
        await self._drain()
        for source in (self._data_pages, self._sitemap_pages):
            if self.done or self.exhausted:
                return
            for path in await source():
                self._push(0, 1, path, 0)
            await self._drain()

    # ----------------------------------------------------------------- frontier

    def _follow(self, links: tuple[Link, ...], page_url: str, depth: int,
                unmatched: str) -> None:
        """Queue a page's links (see content.ranked_links for ``unmatched``)."""
        if depth > self.limits.max_depth:
            return
        for rank, path, then in ranked_links(links, page_url, self.rules, unmatched):
            self._push(rank, depth, path, then)

    def _push(self, rank: int, depth: int, path: str, then: int | None) -> None:
        if path not in self.seen:
            self.seen.add(path)
            heapq.heappush(self.frontier, (rank, depth, len(self.seen), path, then))

    async def _drain(self) -> None:
        while self.frontier and not self.done and not self.exhausted:
            rank, depth, order, path, then = heapq.heappop(self.frontier)
            if rank != then and self._not_needed(rank):
                if then is not None:  # "Penanganan pengaduan" under /layanan/: a service
                    heapq.heappush(self.frontier, (then, depth, order, path, then))
                continue
            if self.robots is None or self.robots.can_fetch(self.limits.user_agent, path):
                await self._read(rank, depth, path)
            elif len(self.notes) < 5:
                self.notes.append(f"robots.txt disallows {path[:200]}: not read")

    def _not_needed(self, rank: int) -> bool:
        """A link whose pages are for items already found (a maklumat page once the
        pledge was read on the home page)."""
        items = self.limits.link_items[rank] if rank < len(self.limits.link_items) else None
        return items is not None and not items & missing_items(self.pages, self.rules)

    async def _read(self, rank: int, depth: int, path: str) -> None:
        """Read one page; a redirect within the site is followed as a link of the same rank."""
        self.page_requests += 1
        text = await self._get(path, html=True)
        if text is None:
            return
        if isinstance(text, tuple):  # a redirect
            target = same_site_path(text[1], urljoin(self.site.base_url, path))
            if target is not None:
                self._push(rank, depth, target, rank)
            return
        page = read_published(text, self.rules, missing_items(self.pages, self.rules))
        self.pages[path] = page
        list_page = rank in self.limits.list_ranks  # a page of services: all its content links
        self._follow(page.links, urljoin(self.site.base_url, path), depth + 1,
                     "content" if list_page else "none")

    async def _get(self, path: str, html: bool = False, limit: int | None = None
                   ) -> str | tuple[int, str] | None:
        """The text of a 200 answer (None otherwise, or when it cannot be read); for a page,
        (status, location) of a redirect."""
        try:
            response = await self.site.get(path)
            if html and response.status in REDIRECTS and response.headers.get("location"):
                return response.status, response.headers["location"][:2000]
            if response.status != 200:
                return None  # a broken link: it costs a page of the budget, nothing more
            kind = response.headers.get("content-type", "").lower()
            if html and kind.startswith(NOT_A_PAGE):
                return None
            text = response.text()
        except ProbeFailure as failure:
            self.failures += 1
            if len(self.notes) < 5:
                self.notes.append(f"{path[:200]}: not read ({failure.detail[:200]})")
            return None
        self.chars += len(text)
        return text[:limit] if limit else text

    # ----------------------------------------------------------------- other sources

    async def _robots(self) -> RobotFileParser | None:
        """robots.txt, read by the standard library's parser (None: none, everything allowed)."""
        text = await self._get(self.limits.robots_path, limit=self.limits.robots_chars)
        if not isinstance(text, str):
            return None
        robots = RobotFileParser()
        robots.parse(text.splitlines()[:5000])
        return robots

    async def _data_pages(self) -> list[str]:
        """The pages the toolkit's standar-pelayanan.json names (bounded in size and depth)."""
        text = await self._get(self.limits.data_path)
        if not isinstance(text, str):
            return []
        pages = pages_from_data(text, self.home_url, self.rules)
        if pages is None and text.lstrip().startswith("{"):
            self.notes.append(f"{self.limits.data_path}: not read (too large, too deeply "
                              "nested, not JSON or another schema)")
        return pages or []

    async def _sitemap_pages(self) -> list[str]:
        """Same-site pages sitemap.xml lists, those worth reading, best first."""
        sitemaps = (self.robots.site_maps() or []) if self.robots else []
        path = next((p for p in (same_site_path(u, self.home_url) for u in sitemaps[:5]) if p),
                    self.limits.sitemap_path)
        text = await self._get(path, limit=self.limits.sitemap_chars)
        if not isinstance(text, str):
            return []
        links = [Link(url, "") for url in sitemap_urls(text, self.limits.sitemap_entries)]
        return [p for _, p, _ in ranked_links(links, self.home_url, self.rules)]


def sitemap_urls(text: str, limit: int) -> list[str]:
    """The <loc> URLs of a sitemap, at most ``limit``: parsed with no entities, no DTD, no
    network and libxml2's limits on; anything that does not parse lists nothing."""
    parser = etree.XMLParser(**SITEMAP_PARSER)
    try:
        root = etree.fromstring(XML_DECLARATION.sub("", text, count=1).encode("utf-8"), parser)
    except (etree.XMLSyntaxError, ValueError):
        return []
    if root is None:
        return []
    urls = []
    for loc in root.iter("{*}loc"):
        if len(urls) >= limit:
            break
        if isinstance(loc.text, str) and loc.text.strip():
            urls.append(loc.text.strip()[:2000])
    return urls
