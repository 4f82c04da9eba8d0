"""The website publication judgment and the "real content" test: pure functions on page text.

SERVICE_STANDARD.md "What counts as published" is the specification: can a citizen who
opens the page read the component? The rules (labels and their variants, what each
component's content must show, weights, bands, what a default or parked page looks
like, the crawl's limits) are data in ``provisioner/data/scoring.yml``; this module reads
HTML the way a person does. A component counts when the main content shows a label
naming it followed by content showing it ("3 hari kerja" for the completion time,
"Gratis" for the fee), never when the word only sits in a menu or a footer; complaint
channels and SP4N-LAPOR! count anywhere on the page. Any site is read, not only ours:
``data-komponen`` markers help when present and are never required.

Everything a page sends is bounded before a pattern or parser sees it (page size,
elements visited, title, labels, content), libxml2 stops at 256 levels of nesting, and
the tree is walked iteratively (lxml's iterwalk), never recursively.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, TypeVar
from urllib.parse import urljoin, urlsplit

import yaml
from lxml import etree

from ..errors import InputError, Problem
from ..paths import DATA_DIR
from .model import CheckResult, Evidence, Publication, Status, result

RULES_FILE = DATA_DIR / "scoring.yml"
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 8x faster

SKIP_TAGS = ("script", "style", "noscript", "template", "svg")
HEADING_RANKS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
LABEL_RANK = 7  # every other label (dt, th, strong, a "label:" line, a tab): the lowest rank
ELEMENT_LABEL_TAGS = frozenset(("dt", "th", "summary"))
INLINE_LABEL_TAGS = frozenset(("strong", "b"))
LABEL_RANKS = {**HEADING_RANKS, **dict.fromkeys(ELEMENT_LABEL_TAGS, LABEL_RANK)}
SPECIAL_TAGS = frozenset(("a", "br", "head", "img", "iframe", "embed", "object"))
BLOCK_TAGS = frozenset(
    "p li div td th dd dt dl ul ol table tr tbody thead section article blockquote main body "
    "figure figcaption form details summary header footer nav aside address pre center "
    "h1 h2 h3 h4 h5 h6 hr".split())
NEVER_CHROME_BY_NAME = frozenset(("html", "body", "main", "article"))
CONTAINERS_OF_HEADERS = frozenset(("main", "article", "section"))
PANEL_CONTROLS = etree.XPath(
    "//*[@aria-controls or @data-bs-target or @data-target or @data-bs-toggle or @data-toggle"
    " or @role='tab']")
CHROME_ATTRIBUTES = etree.XPath("//@role|//@class|//@id")
PANEL_HINTS = ("aria-controls", "data-bs-target", "data-target", "data-toggle",
               "data-bs-toggle", "role=\"tab\"", "role='tab'")
SPACES = re.compile(r"\s+")
JOINED = re.compile(r" (?:dan|serta|&|and) |,| ?/ ?")  # "waktu dan biaya", "syarat/prosedur"
LEADING_TEXT_CHARS = 2000
MEMO_SIZE = 20_000  # remembered labels, class names and links, each, per rule set
FORM_TOKEN = "\ue001"  # a complaint form with fields, as the pengaduan pattern reads it
K = TypeVar("K", bound=Hashable)
NOT_ASCII_ALNUM = bytes(b for b in range(256) if b > 127 or not chr(b).isalnum())
NON_ASCII = re.compile(r"[^\x00-\x7f]+")
TOO_DEEP = "Excessive depth"  # libxml2's error when a page nests deeper than it reads
MAX_DEPTH = 200  # open elements kept when a page is flattened (libxml2 stops at 256)
VOID_TAGS = frozenset("area base br col embed hr img input link meta source track wbr".split())
XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]{0,200}\?>")


def word_chars(text: str) -> int:
    """Letters and digits in a text (str.isalnum): what "non-trivial content" is measured
    in. Counted on the UTF-8 bytes, then the rare non-ASCII runs: 2.5x faster than one
    regular expression over the text."""
    count = len(text.encode("utf-8", "surrogatepass").translate(None, NOT_ASCII_ALNUM))
    for run in NON_ASCII.findall(text):
        count += sum(map(str.isalnum, run))
    return count


def collapse(text: str) -> str:
    return SPACES.sub(" ", text.replace("\xa0", " ")).strip()


def _tidy(text: str) -> str:
    """collapse(), skipped for the usual short text with single spaces only."""
    if "  " in text or "\n" in text or "\t" in text or "\xa0" in text or "\r" in text:
        return collapse(text)
    return text.strip()


# =========================================================================== rules

@dataclass(frozen=True)
class ComponentRule:
    id: str
    label: dict[str, str]
    weight: float
    headings: re.Pattern  # the file's variants joined into one alternation
    markers: tuple[str, ...]
    content: re.Pattern | None  # what the content must show; None: any text
    or_list: bool  # a list of two or more items is content enough
    not_prose: bool  # a long first paragraph is an article, not this component
    site_wide: bool  # counts in menus, headers, footers and sidebars too


@dataclass(frozen=True)
class NotContentRule:
    reason: str
    where: str  # "title" (title and h1) or "page" (also the leading text)
    pattern: re.Pattern


@dataclass(frozen=True)
class Band:
    grade: str
    min: float
    zone: str
    label: dict[str, str]


@dataclass(frozen=True)
class Limits:
    page_chars: int
    elements: int
    title_chars: int
    value_chars: int
    snippet_chars: int
    prose_words: int
    text_chars: int
    links: int
    documents: int


@dataclass(frozen=True)
class Discovery:
    max_pages: int
    max_depth: int
    max_total_chars: int
    max_failed_pages: int
    user_agent: str
    robots_path: str
    robots_chars: int
    sitemap_path: str
    sitemap_chars: int
    sitemap_entries: int
    data_path: str
    data_schema: str
    data_chars: int
    link_patterns: tuple[re.Pattern, ...]
    link_items: tuple[frozenset[str] | None, ...]  # per pattern: what its pages are for
    list_ranks: frozenset[int]  # patterns whose pages list services
    generic_link_text: re.Pattern
    avoid_links: re.Pattern
    document_extensions: frozenset[str]
    document_words: re.Pattern
    skip_extensions: frozenset[str]


@dataclass(frozen=True)
class ScoringRules:
    version: int
    components: tuple[ComponentRule, ...]  # the six delivery components and the maklumat
    pledge: re.Pattern
    complaint_words: re.Pattern
    lapor_id: str
    lapor_label: dict[str, str]
    lapor_weight: float
    lapor_domain: str
    lapor_text: re.Pattern
    bands: tuple[Band, ...]  # highest first
    min_content_chars: int
    max_heading_chars: int
    enumeration: re.Pattern
    limits: Limits
    exclude_tags: frozenset[str]
    header_outside_main: bool
    outside_main: bool
    exclude_roles: frozenset[str]
    exclude_class: re.Pattern
    min_text_chars: int
    not_content: tuple[NotContentRule, ...]
    discovery: Discovery
    markers: dict[str, str] = field(default_factory=dict)  # marker value -> component id
    _class_memo: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    _heading_memo: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)
    _generic_memo: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    _link_memo: dict[tuple[str, str], tuple[int, int | None] | None] = field(default_factory=dict, repr=False,
                                                          compare=False)

    @functools.cached_property
    def ids(self) -> tuple[str, ...]:
        """Every scored item, in report order: the components, the maklumat, the LAPOR! link."""
        return (*(c.id for c in self.components), self.lapor_id)

    @functools.cached_property
    def by_id(self) -> dict[str, ComponentRule]:
        return {c.id: c for c in self.components}

    @functools.cached_property
    def nothing_published(self) -> Publication:
        """The score of a site none of whose pages could be read (shared: never mutated)."""
        return score_publication({}, self)

    @property
    def max_pages(self) -> int:
        return self.discovery.max_pages

    @property
    def data_path(self) -> str:
        return self.discovery.data_path

    def label(self, item: str, lang: str = "id") -> str:
        if item == self.lapor_id:
            return self.lapor_label[lang]
        return self.by_id[item].label[lang]

    def band(self, score: float) -> Band:
        return next(b for b in self.bands if score >= b.min)

    def excludes_names(self, names: str) -> bool:
        """Whether a class (or id) attribute marks chrome: menu, footer, sidebar..."""
        if not names:
            return False
        return _remember(self._class_memo, names[:200], self._names_excluded)

    def _names_excluded(self, names: str) -> bool:
        return any(self.exclude_class.search(name) for name in names.split())

    def component_for(self, heading: str) -> str | None:
        """The component a label names, if it names one."""
        components = self.components_for(heading)
        return components[0] if len(components) == 1 else None

    def components_for(self, heading: str) -> tuple[str, ...]:
        """The components a label names: one ("Jangka Waktu"), several joined ("Waktu dan
        Biaya"), or none (labels repeat across sites: memoised)."""
        if len(heading) > 2 * self.max_heading_chars:
            return ()
        return _remember(self._heading_memo, heading, self._match_headings)

    def link_rank(self, path: str, text: str) -> tuple[int, int | None] | None:
        """How likely a link leads to service standards (0 best), None if not at all; with
        the rank it keeps once the items its first pattern is for are found (None: none).
        The same menu links recur on every page of a site and across sites: memoised."""
        return _remember(self._link_memo, (path[:300], text[:300]), self._match_link)

    def says_nothing(self, link_text: str) -> bool:
        """A link text such as "klik di sini" (memoised: menus repeat on every page)."""
        return _remember(self._generic_memo, link_text,
                         lambda t: self.discovery.generic_link_text.search(t) is not None)

    def is_lapor_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host == self.lapor_domain or host.endswith("." + self.lapor_domain)

    def _match_link(self, link: tuple[str, str]) -> tuple[int, int | None] | None:
        path = link[0].replace("-", " ").replace("_", " ")
        ranks = [i for i, p in enumerate(self.discovery.link_patterns)
                 if p.search(link[1]) or p.search(path)]
        if not ranks:
            return None
        if self.discovery.link_items[ranks[0]] is None:
            return ranks[0], ranks[0]
        # "Maklumat Pelayanan" is the maklumat page; /layanan/penanganan-pengaduan a service
        general = (i for i in ranks if self.discovery.link_items[i] is None
                   and self.discovery.link_patterns[i].search(path))
        return ranks[0], next(general, None)

    def _match_headings(self, heading: str) -> tuple[str, ...]:
        text = normalise_heading(heading, self.enumeration)
        if not text or len(text) > self.max_heading_chars:
            return ()
        one = self._match_one(text)
        if one:
            return (one,)
        parts = [self._match_one(part.strip()) for part in JOINED.split(text) if part.strip()]
        return tuple(dict.fromkeys(parts)) if len(parts) > 1 and all(parts) else ()

    def _match_one(self, text: str) -> str | None:
        return next((rule.id for rule in self.components if rule.headings.fullmatch(text)), None)


def _remember(memo: dict[K, Any], key: K, compute: Callable[[K], Any]) -> Any:
    """memo[key], computed once (bounded: the labels, class names and links of every site
    swept)."""
    try:
        return memo[key]
    except KeyError:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        value = memo[key] = compute(key)
        return value


def normalise_heading(text: str, enumeration: re.Pattern) -> str:
    text = collapse(text).lower()
    text = enumeration.sub("", text)
    return text.rstrip(" :.-–—*").strip()


@functools.lru_cache(maxsize=4)
def load_rules(path: Path = RULES_FILE) -> ScoringRules:
    """Read and check scoring.yml; a broken rule file is an input error naming the field."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
        return _rules_from(data)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, re.error) as exc:
        raise InputError([Problem(path, None, "scoring rules", f"invalid: {exc}",
                                  "compare with the scoring.yml shipped with provisioner")]) from None


FLAGS = re.IGNORECASE


def _component_from(c: dict[str, Any]) -> ComponentRule:
    content = c.get("content") or {}
    pattern = content.get("pattern")
    return ComponentRule(
        id=c["id"], label=dict(c["label"]), weight=float(c["weight"]),
        headings=re.compile("|".join(f"(?:{p})" for p in c["headings"]), FLAGS),
        markers=tuple(c["markers"]),
        content=re.compile(pattern, FLAGS) if pattern else None,
        or_list=bool(content.get("or_list")), not_prose=bool(content.get("not_prose")),
        site_wide=bool(c.get("site_wide")))


def _discovery_from(d: dict[str, Any]) -> Discovery:
    numbers = {k: int(d[k]) for k in (
        "max_pages", "max_depth", "max_total_chars", "max_failed_pages", "robots_chars",
        "sitemap_chars", "sitemap_entries", "data_chars")}
    return Discovery(
        **numbers, user_agent=str(d["user_agent"]), robots_path=d["robots_path"],
        sitemap_path=d["sitemap_path"], data_path=d["data_path"], data_schema=d["data_schema"],
        link_patterns=tuple(re.compile(p["pattern"], FLAGS) for p in d["link_patterns"]),
        link_items=tuple(frozenset(p["items"]) if p.get("items") else None
                         for p in d["link_patterns"]),
        list_ranks=frozenset(i for i, p in enumerate(d["link_patterns"]) if p.get("lists")),
        generic_link_text=re.compile(d["generic_link_text"], FLAGS),
        avoid_links=re.compile(d["avoid_links"], FLAGS),
        document_extensions=frozenset(d["document_extensions"]),
        document_words=re.compile(d["document_words"], FLAGS),
        skip_extensions=frozenset(d["skip_extensions"]))


def _rules_from(data: dict[str, Any]) -> ScoringRules:
    components = tuple(_component_from(c) for c in data["components"])
    lapor, headings, exclude = data["lapor"], data["headings"], data["exclude"]
    words = exclude["class_or_id_words"]
    bands = tuple(sorted((Band(b["grade"], float(b["min"]), b["zone"], dict(b["label"]))
                          for b in data["bands"]), key=lambda b: -b.min))
    if not bands or bands[-1].min > 0:
        raise ValueError("bands must cover scores down to 0")
    return ScoringRules(
        version=int(data["version"]),
        components=components,
        pledge=re.compile(data["pledge"], FLAGS),
        complaint_words=re.compile(data["complaint_words"], FLAGS),
        lapor_id=lapor["id"], lapor_label=dict(lapor["label"]),
        lapor_weight=float(lapor["weight"]), lapor_domain=str(lapor["domain"]).lower(),
        lapor_text=re.compile(lapor["text"], FLAGS),
        bands=bands,
        min_content_chars=int(headings["min_content_chars"]),
        max_heading_chars=int(headings["max_heading_chars"]),
        enumeration=re.compile(headings["enumeration"], FLAGS),
        limits=Limits(**{k: int(v) for k, v in data["limits"].items()}),
        exclude_tags=frozenset(exclude["tags"]),
        header_outside_main=bool(exclude["header_outside_main"]),
        outside_main=bool(exclude["outside_main"]),
        exclude_roles=frozenset(exclude["roles"]),
        exclude_class=re.compile("(^|[-_])(" + "|".join(map(re.escape, words)) + ")($|[-_])",
                                 FLAGS),

        min_text_chars=int(data["content"]["min_text_chars"]),
        not_content=tuple(NotContentRule(r["reason"], r["where"], re.compile(r["pattern"], FLAGS))
                          for r in data["content"]["not_content"]),
        discovery=_discovery_from(data["discovery"]),
        markers={m: c.id for c in components for m in c.markers},
    )


# =========================================================================== page reading

@dataclass(frozen=True)
class Link:
    href: str
    text: str  # the link's text (an image's alt), with the block around it when it says nothing
    in_content: bool = False  # in the main content, not in a menu, header, footer or sidebar


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


LINE_LABEL_WORDS = 5
MAX_PRE_LINES = 500
DIGIT = re.compile(r"\d")


def _label_like(line: str) -> bool:
    """A line that may be a label alone: a few words, no number or address in it (the
    line "Kirim pengaduan ke x@y.go.id" is content, not a label)."""
    return len(line) <= 60 and len(line.split()) <= LINE_LABEL_WORDS \
        and "@" not in line and DIGIT.search(line.lstrip("0123456789.() ")) is None


@functools.lru_cache(maxsize=1024)
def _href_parts(href: str) -> tuple[str | None, str]:
    """A link's host (None if relative or unreadable) and its path's extension (the
    same menu links recur on every page: cached)."""
    try:
        parts = urlsplit(href)
        return parts.hostname, _suffix(parts.path)
    except ValueError:
        return None, ""


def _suffix(path: str) -> str:
    """The extension of a URL path's last segment, lower-cased (".pdf")."""
    return posixpath.splitext(path.rsplit("/", 1)[-1])[1].lower()


class _Open:
    """A label being read: what it names and the content gathered under it so far."""

    __slots__ = ("component", "rank", "label", "scope", "chrome", "extend", "text", "size",
                 "chars", "items", "documents", "picture")

    def __init__(self, component: str, rank: int, label: str, scope: etree._Element,
                 chrome: bool, extend: bool):
        self.component, self.rank, self.label = component, rank, label
        self.scope, self.chrome, self.extend = scope, chrome, extend
        self.text: list[str] = []
        self.size = self.chars = self.items = 0
        self.documents: list[str] = []
        self.picture: str | None = None  # the image the label is drawn as


class _Reader:
    """One walk over a page (lxml's iterwalk: start and end events, no recursion).

    Labels open a component; text, list items, forms and documents met while it is open
    are its content; it closes at the next label, at a heading of the same or a higher
    rank, or at the end of the smallest element around it that holds any content. Text
    in chrome (menus, headers, footers, sidebars, outside <main>) is content only for
    labels in chrome, which count only for site-wide components."""

    def __init__(self, root: etree._Element, rules: ScoringRules, panels: bool,
                 wanted: Iterable[str] | None = None):
        self.root, self.rules, self.limits = root, rules, rules.limits
        self.found: dict[str, str] = {}
        self.documents: list[str] = []
        self.links: list[Link] = []
        self.main_text: list[str] = []
        self.main_size = 0
        self.open: list[_Open] = []
        self.chrome = self._chrome_elements()
        self.chrome_stack: list[etree._Element] = []
        self.panels = self._panels() if panels else {}
        self.wanted = frozenset(rules.ids if wanted is None else wanted)
        self.chrome_for_links_only = not self.wanted & {"pengaduan", rules.lapor_id}
        self.line_start = True
        self.document_link: etree._Element | None = None
        self.section = ""  # the last heading's text: what a document link is filed under
        self.label_line: list[_Open] = []  # a line that may be a label, if the line ends
        self.in_pre = 0  # inside <pre>: its newlines end lines

    # ----------------------------------------------------------------- the walk

    def read(self) -> None:
        walker = etree.iterwalk(self.root, events=("start", "end"))
        visited = 0
        for event, element in walker:
            tag = element.tag
            if not isinstance(tag, str):
                continue
            if event == "start":
                visited += 1
                if visited > self.limits.elements:
                    break
                if self._start(element, tag):
                    walker.skip_subtree()
            else:
                self._end(element, tag)
        self._close(lambda o: True)
        text = "".join(self.main_text)
        pledge = self.rules.pledge.search(text) \
            if "maklumat" in self.wanted and "maklumat" not in self.found else None
        if pledge:
            self._found_text("maklumat", "", text[pledge.start():pledge.start() + 400])

    @property
    def in_chrome(self) -> bool:
        return bool(self.chrome_stack)

    def _start(self, element: etree._Element, tag: str) -> bool:
        """Handle an element's start; True to skip its content (a label, read whole).
        (The hot path of page reading: every element passes here.)"""
        if element in self.chrome:
            self.chrome_stack.append(element)
            if self.chrome_for_links_only and len(self.chrome_stack) == 1:
                for a in element.iter("a"):
                    self._link(a)
                self.document_link = None
                self.chrome_stack.pop()
                return True
        if tag in BLOCK_TAGS:
            self.line_start = True
            if tag == "li" and self.open:
                for o in self._receiving():
                    o.items += 1
            elif tag == "form":
                self._form(element)
            elif tag == "pre":
                self.in_pre += 1
        elif tag in SPECIAL_TAGS:
            if tag == "a":
                self._link(element)
            elif tag == "br":
                self.line_start = True
            elif tag == "head":
                return True  # the title is read apart, for https.content
            else:
                self._embedded(element)
        if self.panels:
            self._open_panel(element)
        marker = element.get("data-komponen")
        if marker:
            component = self.rules.markers.get(marker.strip().lower())
            if component:
                self._open_label((component,), LABEL_RANK, marker, element, extend=False)
        if tag in LABEL_RANKS:
            self._element_label(element, LABEL_RANKS[tag])
            return True
        if tag in INLINE_LABEL_TAGS and self.line_start and self._inline_label(element):
            return True
        text = element.text
        if text and not text.isspace():
            self._text(text, element)
        return False

    def _end(self, element: etree._Element, tag: str) -> None:
        if tag in BLOCK_TAGS or tag == "br":
            self.line_start = True
            if tag == "pre":
                self.in_pre -= 1
        if self.open:
            self._scope_ended(element)
        if element is self.document_link:
            self.document_link = None
        if self.chrome_stack and self.chrome_stack[-1] is element:
            self.chrome_stack.pop()
            if not self.chrome_stack:
                self._close(lambda o: o.chrome)
        tail = element.tail
        if tail and not tail.isspace():
            parent = element.getparent()
            if parent is not None:
                self._text(tail, parent)

    # ----------------------------------------------------------------- labels

    def _element_label(self, element: etree._Element, rank: int) -> None:
        """h1-h6, dt, th, summary: the whole element is a label, of a component or not
        ("<h3>Biaya: Gratis</h3>" is a label and its content)."""
        text = _bounded_text(element, 2 * self.rules.max_heading_chars + 1)
        if not text.strip():  # a heading made of an image: its text is the image's
            image = next(element.iter("img"), None)
            text = (image.get("alt") or "")[:200] if image is not None else ""
        colon = text.find(":", 0, self.rules.max_heading_chars)
        label, rest = (text[:colon], text[colon + 1:]) if colon > 0 else (text, "")
        components = self.rules.components_for(label)
        if not components and rest:
            label, rest, components = text, "", self.rules.components_for(text)
        parent = element.getparent()
        if components:
            self._open_label(components, rank, label, element if parent is None else parent)
            self._main(label)
            self.line_start = False
            self._text(rest, element)
        else:
            self._close(lambda o: o.chrome == self.in_chrome and o.rank >= rank)
            self._text(text, element)
        if rank < LABEL_RANK:
            self.section = text
        self.line_start = True
        for a in element.iter("a"):
            self._link(a)
        self.document_link = None  # its end is not visited

    def _inline_label(self, element: etree._Element) -> bool:
        """strong/b at the start of a line: a label when it names a component and ends with
        ":" or stands alone on its line ("<b>Biaya:</b> Gratis", "<b>Produk</b><br>...")."""
        text = _bounded_text(element, 2 * self.rules.max_heading_chars + 1)
        components = self.rules.components_for(text)
        if not components:
            return False
        tail = (element.tail or "").lstrip()
        following = element.getnext()
        alone = not tail and (following is None or following.tag == "br"
                              or following.tag in BLOCK_TAGS)
        if not (text.rstrip().endswith(":") or tail[:1] in (":", "-", "–", "=") or alone):
            return False
        self._open_label(components, LABEL_RANK, text, self._block_of(element))
        self.line_start = False
        return True

    def _line_label(self, text: str, container: etree._Element) -> str:
        """A line of text that is a label ("Persyaratan") or starts with one ("Biaya: Gratis"):
        open it and return the rest of the line."""
        head = text[:self.rules.max_heading_chars + 1]
        colon = head.find(":")
        label = head[:colon] if colon > 0 else text
        components = self.rules.components_for(label)
        if not components or (colon <= 0 and not _label_like(label)):
            return text
        self._open_label(components, LABEL_RANK, label, self._block_of(container))
        if colon > 0:
            return text[colon + 1:]
        self.label_line = [o for o in self.open if o.component in components]
        return ""

    def _open_panel(self, element: etree._Element) -> None:
        """A tab panel or an accordion body named by the control that opens it."""
        ident = element.get("id")
        component = self.panels.get(ident) if ident else None
        if component:
            self._open_label((component,), LABEL_RANK, component, element, extend=False)

    def _open_label(self, components: tuple[str, ...], rank: int, label: str,
                    scope: etree._Element, extend: bool = True) -> None:
        self._close(lambda o: o.chrome == self.in_chrome)
        self.open += [_Open(c, rank, label, scope, self.in_chrome, extend)
                      for c in components if c in self.wanted]

    def _block_of(self, element: etree._Element) -> etree._Element:
        node = element
        while node.tag not in BLOCK_TAGS:
            parent = node.getparent()
            if parent is None:
                return node
            node = parent
        return node

    # ----------------------------------------------------------------- content

    def _receiving(self) -> list[_Open]:
        chrome = self.in_chrome
        return [o for o in self.open if o.chrome == chrome]

    def _text(self, text: str, container: etree._Element) -> None:
        """A run of text (never blank); in a <pre>, each of its lines."""
        if self.in_pre and "\n" in text.strip():
            for line in text.split("\n")[:MAX_PRE_LINES]:
                self.line_start = True
                if line.strip():
                    self._text_line(line, container)
            return
        self._text_line(text, container)

    def _text_line(self, text: str, container: etree._Element) -> None:
        """A run of text on one line: a label line, content, the main text."""
        if "1708" in text or ".go.id" in text:
            self._lapor_text(text)
        if "pengaduan" not in self.found and len(text) <= self.limits.value_chars \
                and ("aduan" in text or "omplaint" in text or "ADUAN" in text or "Aduan" in text) \
                and self.rules.complaint_words.search(text) and self._inside_link(container) is None:
            self._complaint_mention(text)
        if self.document_link is not None:
            return  # a document's link text is not content
        if self.label_line:
            if not self.line_start:  # words opening a sentence, not a label
                self.open = [o for o in self.open if o not in self.label_line]
            self.label_line = []
        if self.line_start and container.tag != "a" and self._inside_link(container) is None:
            text = self._line_label(text.lstrip(), container)
        newline = "\n" if self.line_start else ""
        self.line_start = False
        self._main(newline + text)
        if not self.open:
            return
        for o in self._receiving():
            if o.size < self.limits.value_chars:
                piece = (newline + text)[:self.limits.value_chars - o.size]
                o.text.append(piece)
                o.size += len(piece)
            o.chars += word_chars(text) if len(text) < 2000 else 2000

    def _main(self, text: str) -> None:
        """Text of the main content: measured for https.content, searched for the pledge."""
        if not self.in_chrome and self.main_size < self.limits.text_chars:
            self.main_text.append(text)
            self.main_size += len(text)

    def _inside_link(self, element: etree._Element) -> etree._Element | None:
        node: etree._Element | None = element
        for _ in range(4):  # a label is never deep inside a link
            if node is None or node.tag in BLOCK_TAGS:
                return None
            if node.tag == "a":
                return node
            node = node.getparent()
        return None

    def _complaint_mention(self, text: str) -> None:
        """A short text naming complaints with a channel's details ("Meja pengaduan ...
        telp. (0543) 27011"): a complaints block wherever it sits."""
        channel = self.rules.by_id["pengaduan"].content
        if channel is not None and channel.search(text) and FORM_TOKEN not in text:
            self._found_text("pengaduan", "", text)

    def _lapor_text(self, text: str) -> None:
        match = self.rules.lapor_text.search(text[:self.limits.value_chars * 4])
        if match:
            self._found_text(self.rules.lapor_id, "", text)

    def _link(self, element: etree._Element) -> None:
        href = (element.get("href") or "").strip()
        if not href or len(self.links) >= self.limits.links:
            return
        href = href[:2000]
        host, suffix = _href_parts(href)
        if host and self.rules.is_lapor_host(host):
            self._found_text(self.rules.lapor_id, "link", href)
        text = element.text or "" if len(element) == 0 else _bounded_text(element, 200)
        text = _tidy(text[:200])
        if not text:
            image = next(element.iter("img"), None)
            text = collapse((image.get("alt") or image.get("title") or "")[:200]) \
                if image is not None else ""
        if suffix in self.rules.discovery.document_extensions:
            self.document_link = element
            self._document(href, f"{text} {self.section}")
            return
        if self.rules.says_nothing(text):
            text = f"{text} {collapse(_bounded_text(self._block_of(element), 300))}"
        self.links.append(Link(href, text, not self.in_chrome))

    def _embedded(self, element: etree._Element) -> None:
        """An image (or an embedded PDF): never content; a document when it is a standard.
        A page embedded in a frame is shown to every visitor: a link, named by the
        heading above it."""
        source = (element.get("src") or element.get("data") or "").strip()[:2000]
        if not source:
            return
        if element.tag != "img" and _suffix(self._path(source)) \
                not in self.rules.discovery.document_extensions:
            if element.tag == "iframe" and len(self.links) < self.limits.links:
                self.links.append(Link(source, self.section[:200], not self.in_chrome))
            return
        alt = collapse((element.get("alt") or element.get("title") or "")[:200])
        if element.getparent() is not None and element.getparent() is self.document_link:
            return
        if alt and self.line_start and element.tag == "img" \
                and self._image_label(element, source, alt):
            return
        self._document(source, alt)

    def _image_label(self, image: etree._Element, source: str, alt: str) -> bool:
        """An image whose text names a component, at the start of a line and not the
        awaited content of an open label: a label ("Persyaratan" drawn as an icon above
        the list), as a visitor reads it; the image itself if nothing readable follows."""
        components = self.rules.components_for(alt)
        if not components or not _label_like(alt) or self._inside_link(image) is not None \
                or any(o.chars == 0 for o in self._receiving()):
            return False
        self._open_label(components, LABEL_RANK, alt, self._block_of(image))
        for o in self.open:
            if o.component in components:
                o.picture = source
        return True

    @staticmethod
    def _path(url: str) -> str:
        try:
            return urlsplit(url).path
        except ValueError:
            return ""

    def _document(self, source: str, text: str) -> None:
        """A PDF, an office file or an image: content for nobody; under an open label, or
        named like a standard, it is reported when the standard is not found as text."""
        receiving = self._receiving()
        for o in receiving:
            if len(o.documents) < self.limits.documents:
                o.documents.append(source)
        if not receiving and self.rules.discovery.document_words.search(f"{source} {text}") \
                and len(self.documents) < self.limits.documents and source not in self.documents:
            self.documents.append(source)

    def _form(self, element: etree._Element) -> None:
        """A form with at least two fields to fill in: a complaint form under a label."""
        fields = 0
        for child in element.iter("input", "textarea", "select"):
            if child.tag != "input" or (child.get("type") or "text").lower() not in (
                    "hidden", "submit", "button", "image", "reset"):
                fields += 1
                if fields >= 2:
                    break
        if fields >= 2:
            for o in self._receiving():
                o.text.append(f" {FORM_TOKEN} ")
                o.chars += 5

    # ----------------------------------------------------------------- closing

    def _scope_ended(self, element: etree._Element) -> None:
        """Labels whose scope ends here close if they hold content; the others look
        further, in the enclosing element (a heading alone in its own <div>)."""
        for o in [o for o in self.open if o.scope is element]:
            parent = element.getparent()
            if o.extend and o.chars == 0 and not o.documents and parent is not None:
                o.scope = parent
            else:
                self.open.remove(o)
                self._judge(o)

    def _close(self, which: Callable[[_Open], bool]) -> None:
        for o in [o for o in self.open if which(o)]:
            self.open.remove(o)
            self._judge(o)

    def _judge(self, o: _Open) -> None:
        """Whether a closed label's content shows its component (SERVICE_STANDARD.md)."""
        if o.component in self.found:
            return
        rule = self.rules.by_id[o.component]
        value = "".join(o.text)
        shown = (not o.chrome or rule.site_wide) and o.chars >= self.rules.min_content_chars \
            and (rule.content is None or rule.content.search(value) is not None
                 or (rule.or_list and o.items >= 2)) \
            and not (rule.not_prose and o.items < 2 and self._prose(value))
        if shown:
            self._found_text(o.component, o.label, value)
        elif o.documents or o.picture:
            pictures = [o.picture] if o.picture else []
            self.documents.extend(d for d in [*pictures, *o.documents] if d not in self.documents)
            del self.documents[self.limits.documents:]

    def _prose(self, value: str) -> bool:
        first = next((line for line in value.split("\n") if line.strip()), "")
        return len(first.split()) > self.limits.prose_words

    def _found_text(self, item: str, label: str, value: str) -> None:
        if item in self.found:
            return
        label = collapse(label[:200]).rstrip(" :")
        value = collapse(value.replace(FORM_TOKEN, "[formulir]")[:400])
        snippet = f"{label}: {value}" if label and value else label or value
        self.found[item] = snippet[:self.limits.snippet_chars]

    # ----------------------------------------------------------------- set-up

    def _chrome_elements(self) -> set[etree._Element]:
        """Menus, footers, sidebars, page headers, and what lies outside <main>."""
        root, rules = self.root, self.rules
        chrome = set(root.iter(*rules.exclude_tags))
        if rules.header_outside_main:
            chrome.update(h for h in root.iter("header")
                          if next(h.iterancestors(*CONTAINERS_OF_HEADERS), None) is None)
        main = None
        for value in CHROME_ATTRIBUTES(root):  # the attribute values alone: 2x faster
            if value.attrname == "role":
                role = value.strip().lower()
                if role in rules.exclude_roles:
                    chrome.add(value.getparent())
                elif role == "main" and main is None:
                    main = value.getparent()
            elif rules.excludes_names(str(value)):
                element = value.getparent()
                if element.tag not in NEVER_CHROME_BY_NAME:
                    chrome.add(element)
        main = next(root.iter("main"), main)
        if rules.outside_main and main is not None:
            for node in (main, *main.iterancestors()):
                chrome.update(s for s in node.itersiblings(preceding=True)
                              if isinstance(s.tag, str))
                chrome.update(s for s in node.itersiblings() if isinstance(s.tag, str))
        return chrome

    def _panels(self) -> dict[str, str]:
        """Tab panels and accordion bodies: element id -> the component its control names."""
        panels: dict[str, str] = {}
        for control in PANEL_CONTROLS(self.root)[:200]:
            target = (control.get("aria-controls") or control.get("data-bs-target")
                      or control.get("data-target") or control.get("href") or "")
            target = target.strip().lstrip("#")
            if not target or target in panels:
                continue
            text = control.text or "" if len(control) == 0 else _bounded_text(control, 201)
            component = self.rules.component_for(text)
            if component:
                panels[target] = component
        return panels


# =========================================================================== scoring

def score_publication(pages: dict[str, Published], rules: ScoringRules,
                      notes: Iterable[str] = ()) -> Publication:
    """Score the pages read (path -> what it publishes): an item counts when any page
    publishes it; the evidence is the first page (in reading order) that does."""
    evidence: dict[str, Evidence] = {}
    documents: list[str] = []
    for path, page in pages.items():
        for item, snippet in page.found.items():
            evidence.setdefault(item, Evidence(path, snippet))
        documents += [d for d in page.documents if d not in documents]
    weights = {c.id: c.weight for c in rules.components} | {rules.lapor_id: rules.lapor_weight}
    total = sum(weights.values())
    score = round(100 * sum(weights[i] for i in evidence) / total, 1) if total else 0.0
    return Publication(
        score=score,
        band=rules.band(score).grade,
        components={item: item in evidence for item in rules.ids},
        evidence={item: evidence[item] for item in rules.ids if item in evidence},
        pages=tuple(pages),
        documents=tuple(documents[:rules.limits.documents]),
        notes=tuple(notes),
    )


def publication_checks(publication: Publication, rules: ScoringRules) -> list[CheckResult]:
    """One check per scored item: found (with where) or not on the pages read; and a
    warning naming the documents when a standard is missing and was seen only in them."""
    read = f"not on the {len(publication.pages)} page(s) read"
    checks = [result(f"publication.{item}", Status.PASS, str(publication.evidence[item]))
              if publication.components[item]
              else result(f"publication.{item}", Status.FAIL, f"{rules.label(item, 'en')} {read}")
              for item in rules.ids]
    missing = [c.id for c in rules.components if not publication.components.get(c.id)]
    if missing and publication.documents:
        checks.append(result(
            "publication.documents", Status.WARN,
            f"{', '.join(missing)} not readable on the site's pages; seen only in "
            f"{', '.join(publication.documents)} (a PDF or an image: ask for an HTML version)"))
    return checks


def missing_items(pages: dict[str, Published], rules: ScoringRules) -> set[str]:
    """Items no page read so far publishes (reading stops early when this is empty)."""
    return set(rules.ids).difference(*(page.found for page in pages.values()))


def not_content_reason(page: PageAnalysis, rules: ScoringRules) -> str | None:
    """Why a page is not real content (default server page, parked, error, almost empty)."""
    for rule in rules.not_content:
        haystack = page.headline if rule.where == "title" else f"{page.headline} {page.leading_text}"
        if rule.pattern.search(haystack):
            return rule.reason
    if page.text_chars < rules.min_text_chars:
        return f"almost empty ({page.text_chars} letters of text)"
    return None


# =========================================================================== discovery

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
