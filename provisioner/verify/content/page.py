"""What a page publishes (``Published``; the home page's ``PageAnalysis`` with its
title and main text) and the two ways to read one: ``analyse_page`` and
``read_published``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .parse import _bounded_text, _may_have_panels, _parse
from .reader import Link, _Reader
from .rules import ScoringRules
from .text import collapse, word_chars

LEADING_TEXT_CHARS = 2000


@dataclass(frozen=True)
class Published:
    """What one page publishes: items found (id -> snippet), the standards it offers only
    as a document or an image, and its links (the crawl follows them)."""

    found: dict[str, str]
    documents: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()


@dataclass(frozen=True)
class PageAnalysis(Published):
    """The home page: what it publishes, and whether it is real content."""

    title: str = ""
    headline: str = ""  # the title and the h1 headings: where default pages give themselves away
    text_chars: int = 0  # letters and digits of the main content
    leading_text: str = ""


NOTHING = PageAnalysis({})


def analyse_page(html: str, rules: ScoringRules) -> PageAnalysis:
    """Read a home page: what it publishes, its links, its title and its main text."""
    root = _parse(html, rules)
    if root is None:
        return NOTHING
    reader = _Reader(root, rules, _may_have_panels(html))
    reader.read()
    cap = rules.limits.title_chars
    title = collapse(_bounded_text(next(root.iter("title"), None), cap))[:cap]
    h1 = [collapse(_bounded_text(h, cap))[:cap] for _, h in zip(range(5), root.iter("h1"))]
    text = "".join(reader.main_text)
    return PageAnalysis(
        found=reader.found, documents=tuple(reader.documents), links=tuple(reader.links),
        title=title,
        headline=" | ".join([title, *h1]),
        text_chars=word_chars(text),
        leading_text=collapse(text[:LEADING_TEXT_CHARS * 2])[:LEADING_TEXT_CHARS],
    )


def read_published(html: str, rules: ScoringRules,
                   wanted: Iterable[str] | None = None) -> Published:
    """Read another page of the site: what it publishes and its links. Given ``wanted``
    (the items the pages read so far lack), only those are looked for: a page of a site
    whose complaint channel and LAPOR! are known has its menus, header and footer read
    for their links alone."""
    root = _parse(html, rules)
    if root is None:
        return NOTHING
    reader = _Reader(root, rules, _may_have_panels(html), wanted)
    reader.read()
    return Published(reader.found, tuple(reader.documents), tuple(reader.links))
