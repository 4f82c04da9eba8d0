"""The crawl: which pages of a site are read for the publication score, and in what order.

Pages are fetched through a ``Site`` (verify.http); what they publish is judged by
verify.content.
"""

from __future__ import annotations

from urllib.parse import urljoin

from .content import (
    PageAnalysis,
    Publication,
    Published,
    ScoringRules,
    missing_items,
    pages_from_data,
    pages_from_links,
    read_published,
    score_publication,
)
from .http import Site
from .tls import ProbeFailure


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
