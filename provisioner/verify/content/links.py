"""Which pages to read next: same-site paths of a page's links ranked by the rules'
link patterns, and the pages a standar-pelayanan.json names."""

from __future__ import annotations

import functools
import json
from typing import Iterable
from urllib.parse import urljoin, urlsplit

from .reader import Link
from .rules import ScoringRules
from .text import _suffix


def same_site_path(url: str, base_url: str) -> str | None:
    """The path (and query) of url when it is on the same scheme, host and port as base,
    without its fragment; None for another site or a URL that does not parse."""
    try:
        base, target = urlsplit(base_url), urlsplit(url)
        if target.scheme or target.netloc:
            if (target.scheme.lower(), target.hostname, target.port) != (
                    base.scheme, base.hostname, base.port):
                return None
            path, query = target.path or "/", target.query
        else:
            path, query = _relative_path(base.path or "/", target.path, target.query)
    except ValueError:  # "http://[x", a port out of range
        return None
    if not query and path.rsplit("/", 1)[-1].lower() in ("index.html", "index.htm", "index.php"):
        path = path.rsplit("/", 1)[0] + "/"
    return path + (f"?{query}" if query else "")


@functools.lru_cache(maxsize=4096)
def _relative_path(base_path: str, path: str, query: str) -> tuple[str, str]:
    """A relative reference resolved against a base path (the same few links recur on
    every site built from one template, hence the cache)."""
    joined = urlsplit(urljoin(f"http://x{base_path}", path or ""))
    return joined.path or "/", query


def ranked_links(links: Iterable[Link], page_url: str, rules: ScoringRules,
                 unmatched: str = "none") -> list[tuple[int, str, int | None]]:
    """(rank, path, rank once its items are found) of the same-site pages worth reading
    among a page's links, best first: ranked by link_patterns on the link's text (with
    the block around a "klik di sini") and path; documents and other sites are left
    out. Links matching no pattern
    come last (content before menus) when ``unmatched`` is "all" (the home page's menu
    is where a visitor starts) or "content" (the content of a list of services), and
    never when they look like news, galleries or logins (``avoid_links``)."""
    last = len(rules.discovery.link_patterns)
    ranked: dict[str, tuple[int, int | None]] = {}
    here = same_site_path(page_url, page_url)
    for link in links:
        if link.href.startswith(("mailto:", "tel:", "javascript:", "data:", "#")):
            continue
        path = same_site_path(link.href, page_url)
        if path is None or path == here:
            continue
        rank = rules.link_rank(path, link.text)
        if rank is None and (unmatched == "all" or (unmatched == "content" and link.in_content)) \
                and not rules.discovery.avoid_links.search(f"{path[:300]} {link.text[:300]}"):
            rank = (last, last) if link.in_content else (last + 1, last + 1)
        if rank is None or (path in ranked and ranked[path][0] <= rank[0]):
            continue
        if _suffix(path.split("?", 1)[0]) not in rules.discovery.skip_extensions:
            ranked[path] = rank
    return sorted(((rank, path, then) for path, (rank, then) in ranked.items()),
                  key=lambda r: r[0])


def pages_from_data(text: str, base_url: str, rules: ScoringRules) -> list[str] | None:
    """Pages named by a standar-pelayanan.json of the expected schema; None when it is not
    one (too large, too deeply nested, not JSON, another schema)."""
    if len(text) > rules.discovery.data_chars:
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("schema") != rules.discovery.data_schema:
        return None
    services = document.get("services")
    urls = [s.get("url") for s in (services if isinstance(services, list) else [])[:200]
            if isinstance(s, dict)]
    for key in ("maklumat", "pengaduan"):
        section = document.get(key)
        if isinstance(section, dict):
            urls.append(section.get("url"))
    paths = [same_site_path(u[:2000], base_url) for u in urls if isinstance(u, str)]
    return list(dict.fromkeys(p for p in paths if p))[:rules.max_pages]
