"""HTML to a bounded lxml tree: libxml2's parser (no network, stops at 256 levels),
a page nested deeper flattened first, script/style/... removed; the text of an
element gathered up to a limit."""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

from lxml import etree

from .rules import ScoringRules

SKIP_TAGS = ("script", "style", "noscript", "template", "svg")
PANEL_HINTS = ("aria-controls", "data-bs-target", "data-target", "data-toggle",
               "data-bs-toggle", "role=\"tab\"", "role='tab'")
FORM_TOKEN = "\ue001"  # a complaint form with fields, as the pengaduan pattern reads it
TOO_DEEP = "Excessive depth"  # libxml2's error when a page nests deeper than it reads
MAX_DEPTH = 200  # open elements kept when a page is flattened (libxml2 stops at 256)
VOID_TAGS = frozenset("area base br col embed hr img input link meta source track wbr".split())
XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]{0,200}\?>")


def _parse(html: str, rules: ScoringRules) -> etree._Element | None:
    """libxml2's HTML parser: no network, no huge trees (it stops at 256 levels), comments
    and processing instructions dropped, script/style/... removed."""
    parser = etree.HTMLParser(no_network=True, remove_comments=True, remove_pis=True,
                              collect_ids=False, huge_tree=False)
    html = html[:rules.limits.page_chars]
    try:
        if html.lstrip()[:5] == "<?xml":
            html = XML_DECLARATION.sub("", html, count=1)
        if FORM_TOKEN in html:
            html = html.replace(FORM_TOKEN, "")
        root = etree.fromstring(html, parser)
        if any(TOO_DEEP in entry.message for entry in parser.error_log):
            root = etree.fromstring(flatten_deep(html), parser)
    except (etree.XMLSyntaxError, ValueError):
        return None  # an empty document
    if root is not None:
        etree.strip_elements(root, *SKIP_TAGS, with_tail=False)
    return root


class _Flattener(HTMLParser):
    """The page again, never more than ``MAX_DEPTH`` elements deep: an element that would
    open deeper closes the deepest open one first and becomes its sibling, as Chromium's
    tree builder does past 512 levels, so every element and its text are kept in order.
    The standard library's tokenizer reads the tags; an end tag closes the nearest open
    element of its name."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[list] = []  # [tag, still open in the output]
        self.depth = 0  # elements open in the output

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in VOID_TAGS:
            self.out.append(self.get_starttag_text() or "")
            return
        if self.depth >= MAX_DEPTH:
            deepest = next(e for e in reversed(self.open) if e[1])
            self.out.append(f"</{deepest[0]}>")
            deepest[1] = False
            self.depth -= 1
        self.out.append(self.get_starttag_text() or "")
        self.open.append([tag, True])
        self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.out.append(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == tag:
                closed, self.open = self.open[index:], self.open[:index]
                ended = [name for name, still_open in reversed(closed) if still_open]
                self.depth -= len(ended)
                self.out.extend(f"</{name}>" for name in ended)
                return

    def handle_data(self, data: str) -> None:
        self.out.append(escape(data, quote=False))


def flatten_deep(page: str) -> str:
    """A page whose nesting stopped libxml2 (256 levels), made shallow enough to read."""
    flattener = _Flattener()
    flattener.feed(page)
    flattener.close()
    return "".join(flattener.out)


def _may_have_panels(html: str) -> bool:
    """Whether tab or accordion controls may be there (the XPath costs as much as the
    rest of the set-up: asked only then)."""
    return any(hint in html for hint in PANEL_HINTS)


def _bounded_text(element: etree._Element | None, limit: int) -> str:
    """The text of an element, stopping once ``limit`` characters are gathered."""
    if element is None:
        return ""
    pieces, size = [], 0
    for piece in element.itertext():
        pieces.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return "".join(pieces)[:limit]
