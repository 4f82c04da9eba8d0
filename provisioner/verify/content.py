"""The website publication scorer and the "real content" test: pure functions on page text.

The rules (component names and their heading variants, weights, bands, what a default or
parked page looks like) are data in ``provisioner/data/scoring.yml``; this module only
reads HTML the way a person does: a component counts when the main content shows it as
a heading followed by some text, never when the word only sits in a menu or a footer.
Any site is read, not only ours: ``data-komponen`` markers help when present and are
never required.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import yaml
from lxml import etree

from ..errors import InputError, Problem
from .model import CheckResult, Publication, Status, result

RULES_FILE = Path(__file__).resolve().parent.parent / "data" / "scoring.yml"

SKIP_TAGS = frozenset(("script", "style", "noscript", "template", "svg"))
HEADING_RANKS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6, "dt": 7, "th": 7}
LABEL_RANK = 7  # strong/b labels and label cells: the lowest heading rank
LABEL_TAGS = frozenset(("strong", "b"))
BLOCK_TAGS = frozenset(
    "p li div td dd section article blockquote main body figure form details summary".split())
CONTAINERS_OF_HEADERS = frozenset(("main", "article", "section"))
NON_WORD = re.compile(r"[\W_]+")
SPACES = re.compile(r"\s+")
LEADING_TEXT_CHARS = 2000
MEMO_SIZE = 20_000  # remembered heading texts and class names, per rule set


def word_chars(text: str) -> int:
    """Letters and digits in a text: what "non-trivial content" is measured in."""
    return len(NON_WORD.sub("", text))


# =========================================================================== rules

@dataclass(frozen=True)
class ComponentRule:
    id: str
    label: dict[str, str]
    weight: float
    headings: re.Pattern  # the file's variants joined into one alternation
    markers: tuple[str, ...]


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
class ScoringRules:
    version: int
    components: tuple[ComponentRule, ...]  # the six delivery components and the maklumat
    lapor_id: str
    lapor_label: dict[str, str]
    lapor_weight: float
    lapor_hosts: frozenset[str]
    bands: tuple[Band, ...]  # highest first
    min_content_chars: int
    max_heading_chars: int
    enumeration: re.Pattern
    exclude_tags: frozenset[str]
    header_outside_main: bool
    exclude_roles: frozenset[str]
    exclude_class: re.Pattern
    min_text_chars: int
    not_content: tuple[NotContentRule, ...]
    data_path: str
    data_schema: str
    max_pages: int
    link_patterns: tuple[re.Pattern, ...]
    skip_extensions: frozenset[str]
    markers: dict[str, str] = field(default_factory=dict)  # marker value -> component id
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every scored item, in report order: the components, the maklumat, the LAPOR! link."""
        return (*(c.id for c in self.components), self.lapor_id)

    def label(self, item: str, lang: str = "id") -> str:
        if item == self.lapor_id:
            return self.lapor_label[lang]
        return next(c.label[lang] for c in self.components if c.id == item)

    def band(self, score: float) -> Band:
        return next(b for b in self.bands if score >= b.min)

    def excludes_names(self, names: str) -> bool:
        """Whether a class (or id) attribute marks chrome: menu, footer, sidebar..."""
        if not names:
            return False
        return self._remember(("class", names), lambda: any(
            self.exclude_class.search(name) for name in names.split()))

    def component_for(self, heading: str) -> str | None:
        """The component a heading names, if any (headings repeat across sites: memoised)."""
        return self._remember(("heading", heading), lambda: self._match_heading(heading))

    def _match_heading(self, heading: str) -> str | None:
        text = normalise_heading(heading, self.enumeration)
        if not text or len(text) > self.max_heading_chars:
            return None
        return next((rule.id for rule in self.components if rule.headings.fullmatch(text)), None)

    def _remember(self, key: tuple[str, str], compute: Callable[[], Any]) -> Any:
        cache = self._cache
        if key not in cache:
            if len(cache) >= MEMO_SIZE:
                cache.clear()
            cache[key] = compute()
        return cache[key]


def normalise_heading(text: str, enumeration: re.Pattern) -> str:
    text = SPACES.sub(" ", text.replace("\xa0", " ")).strip().lower()
    text = enumeration.sub("", text)
    return text.rstrip(" :.-–—*").strip()


@functools.lru_cache(maxsize=4)
def load_rules(path: Path = RULES_FILE) -> ScoringRules:
    """Read and check scoring.yml; a broken rule file is an input error naming the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return _rules_from(data)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, re.error) as exc:
        raise InputError([Problem(path, None, "scoring rules", f"invalid: {exc}",
                                  "compare with the scoring.yml shipped with provisioner")]) from None


def _rules_from(data: dict[str, Any]) -> ScoringRules:
    flags = re.IGNORECASE
    components = tuple(
        ComponentRule(id=c["id"], label=dict(c["label"]), weight=float(c["weight"]),
                      headings=re.compile("|".join(f"(?:{p})" for p in c["headings"]), flags),
                      markers=tuple(c["markers"]))
        for c in data["components"])
    lapor, headings, exclude = data["lapor"], data["headings"], data["exclude"]
    content, discovery = data["content"], data["discovery"]
    bands = tuple(sorted((Band(b["grade"], float(b["min"]), b["zone"], dict(b["label"]))
                          for b in data["bands"]), key=lambda b: -b.min))
    if not bands or bands[-1].min > 0:
        raise ValueError("bands must cover scores down to 0")
    return ScoringRules(
        version=int(data["version"]),
        components=components,
        lapor_id=lapor["id"], lapor_label=dict(lapor["label"]),
        lapor_weight=float(lapor["weight"]), lapor_hosts=frozenset(lapor["hosts"]),
        bands=bands,
        min_content_chars=int(headings["min_content_chars"]),
        max_heading_chars=int(headings["max_heading_chars"]),
        enumeration=re.compile(headings["enumeration"], flags),
        exclude_tags=frozenset(exclude["tags"]),
        header_outside_main=bool(exclude["header_outside_main"]),
        exclude_roles=frozenset(exclude["roles"]),
        exclude_class=re.compile(exclude["class_or_id"], flags),
        min_text_chars=int(content["min_text_chars"]),
        not_content=tuple(NotContentRule(r["reason"], r["where"], re.compile(r["pattern"], flags))
                          for r in content["not_content"]),
        data_path=discovery["data_path"],
        data_schema=discovery["data_schema"],
        max_pages=int(discovery["max_pages"]),
        link_patterns=tuple(re.compile(p, flags) for p in discovery["link_patterns"]),
        skip_extensions=frozenset(discovery["skip_extensions"]),
        markers={m: c.id for c in components for m in c.markers},
    )


# =========================================================================== page reading

@dataclass(frozen=True)
class PageAnalysis:
    """What one page shows: components published (id -> evidence), links, and its text."""

    found: dict[str, str]
    lapor_link: bool
    links: tuple[tuple[str, str], ...]  # (href, link text), in document order
    title: str
    headline: str  # the title and the h1 headings: where default pages give themselves away
    text_chars: int  # letters and digits of the main content
    leading_text: str


@dataclass(slots=True)
class _Open:
    """An open element while reading."""

    tag: str
    excluded: bool
    start: int  # index in the event list when it opened
    capture: str | None = None  # "heading" (always), "label" / "cell" (if it qualifies)
    block: bool = False
    block_has_text: bool = False
    marker: str | None = None


class _PageReader:
    """An lxml parser target turning a page into a flat list of events.

    Events are ``("t", text, in_main)``, ``("h", (component, rank, text), in_main)``,
    ``("m+", component, in_main)`` and ``("m-", component, in_main)``. Text inside a
    heading is folded into its heading event when the heading closes. libxml2 sends
    balanced start/end calls (implied end tags included), so a stack is enough.
    """

    def __init__(self, rules: ScoringRules):
        self.rules = rules
        self.events: list[tuple[str, Any, bool]] = []
        self.stack: list[_Open] = []
        self.blocks: list[_Open] = []
        self.headings_open = 0
        self.skip_depth = 0
        self.main_depth = 0
        self.saw_main = False
        self.title: list[str] | None = None
        self.titles: list[str] = []
        self.h1: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.link_text: list[str] | None = None
        self.link_href = ""
        self.lapor_link = False

    # ---------------------------------------------------------------- lxml target API

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if self.skip_depth or tag in SKIP_TAGS:
            self.skip_depth += 1
            return
        if tag == "title":
            self.title = []
        elif tag == "a":
            self._open_link(attrib.get("href", ""))
        parent_excluded = bool(self.stack) and self.stack[-1].excluded
        node = _Open(tag, parent_excluded or self._excludes(tag, attrib), len(self.events),
                     block=tag in BLOCK_TAGS)
        if tag == "main":
            self.main_depth += 1
            self.saw_main = True
        if not node.excluded:
            node.capture = self._capture_kind(tag)
            if node.capture == "heading":
                self.headings_open += 1
            marker = attrib.get("data-komponen")
            if marker and (component := self.rules.markers.get(marker.strip().lower())):
                node.marker = component
                self._emit("m+", component)
        if node.block:
            self.blocks.append(node)
        self.stack.append(node)

    def end(self, tag: str) -> None:
        if self.skip_depth:
            self.skip_depth -= 1
            return
        if tag == "title" and self.title is not None:
            self.titles.append("".join(self.title))
            self.title = None
        elif tag == "a":
            self._close_link()
        node = self.stack.pop()
        if node.block:
            self.blocks.pop()
        if node.capture:
            if node.capture == "heading":
                self.headings_open -= 1
            self._fold_heading(node)
        if node.marker:
            self._emit("m-", node.marker)
        if node.tag == "main":
            self.main_depth -= 1

    def data(self, text: str) -> None:
        if self.skip_depth:
            return
        if self.title is not None:
            self.title.append(text)
            return
        if self.link_text is not None:
            self.link_text.append(text)
        if not self.stack or self.stack[-1].excluded:
            return
        if self.blocks and not text.isspace():
            self.blocks[-1].block_has_text = True
        self._emit("t", text)

    def close(self) -> None:
        self._close_link()

    # ---------------------------------------------------------------- helpers

    def _excludes(self, tag: str, attrib: dict[str, str]) -> bool:
        rules = self.rules
        if tag in rules.exclude_tags:
            return True
        if tag == "header" and rules.header_outside_main and not any(
                n.tag in CONTAINERS_OF_HEADERS for n in self.stack):
            return True
        if not attrib:
            return False
        if attrib.get("role", "").lower() in rules.exclude_roles:
            return True
        return rules.excludes_names(attrib.get("class", "")) or rules.excludes_names(
            attrib.get("id", ""))

    def _capture_kind(self, tag: str) -> str | None:
        if self.headings_open:
            return None
        if tag in HEADING_RANKS:
            return "heading"
        if tag in LABEL_TAGS and (not self.blocks or not self.blocks[-1].block_has_text):
            return "label"
        if tag == "td":
            return "cell"
        return None

    def _fold_heading(self, node: _Open) -> None:
        """Replace the text events of a closed heading-like element by one heading event."""
        inner = self.events[node.start:]
        if any(kind == "h" for kind, _, _ in inner):
            return  # it holds headings of its own: a container, not a label
        text = "".join(value for kind, value, _ in inner if kind == "t")
        if node.capture != "heading" and not 0 < len(text.strip()) <= self.rules.max_heading_chars:
            return  # empty or long: emphasis or an ordinary cell, not a label
        component = self.rules.component_for(text)
        if node.capture == "cell" and component is None:
            return  # an ordinary table cell
        markers = [event for event in inner if event[0] != "t"]
        del self.events[node.start:]
        self.events.extend(markers)
        self._emit("h", (component, HEADING_RANKS.get(node.tag, LABEL_RANK), text))
        if node.tag == "h1":
            self.h1.append(text)

    def _emit(self, kind: str, value: Any) -> None:
        self.events.append((kind, value, self.main_depth > 0))

    def _open_link(self, href: str) -> None:
        self._close_link()
        self.link_href, self.link_text = href.strip(), []
        if "lapor" in href and (urlsplit(self.link_href).hostname or "").lower() \
                in self.rules.lapor_hosts:
            self.lapor_link = True

    def _close_link(self) -> None:
        if self.link_text is not None:
            self.links.append((self.link_href, SPACES.sub(" ", "".join(self.link_text)).strip()))
            self.link_text = None


def analyse_page(html: str, rules: ScoringRules) -> PageAnalysis:
    """Read one HTML page: which components it publishes, its links and its main text."""
    parser = _PageReader(rules)
    if html.strip():
        lxml_parser = etree.HTMLParser(target=parser, no_network=True, remove_comments=True,
                                       remove_pis=True)
        lxml_parser.feed(html)
        lxml_parser.close()
    events = [e for e in parser.events if e[2]] if parser.saw_main else parser.events
    text = " ".join(value if kind == "t" else value[2] for kind, value, _ in events
                    if kind in ("t", "h"))
    title = SPACES.sub(" ", " ".join(parser.titles)).strip()
    return PageAnalysis(
        found=_components_in(events, rules),
        lapor_link=parser.lapor_link,
        links=tuple(parser.links),
        title=title,
        headline=" | ".join([title, *(SPACES.sub(" ", h).strip() for h in parser.h1)]),
        text_chars=word_chars(text),
        leading_text=SPACES.sub(" ", text[:LEADING_TEXT_CHARS * 2]).strip()[:LEADING_TEXT_CHARS],
    )


def _components_in(events: list[tuple[str, Any, bool]], rules: ScoringRules) -> dict[str, str]:
    """Components whose heading (or marker) is followed by enough text."""
    found: dict[str, str] = {}
    open_headings: list[list] = []  # [component, rank, heading text, letters so far]
    marker_chars: dict[str, int] = {}
    markers: list[str] = []
    def add(chars: int) -> None:
        for heading in open_headings:
            heading[3] += chars
        for marker in markers:
            marker_chars[marker] = marker_chars.get(marker, 0) + chars

    for kind, value, _ in events:
        if kind == "t":
            if open_headings or markers:
                add(word_chars(value))
        elif kind == "h":
            component, rank, text = value
            _settle(open_headings, found, rules, ends=lambda h: component or h[1] >= rank)
            if component:
                open_headings.append([component, rank, text, 0])
            else:
                add(word_chars(text))  # a minor label ("KTP:") is content of what it is under
        elif kind == "m+":
            markers.append(value)
        elif kind == "m-" and value in markers:
            markers.remove(value)
    _settle(open_headings, found, rules, ends=lambda h: True)
    for component, chars in marker_chars.items():
        if chars >= rules.min_content_chars:
            found.setdefault(component, "data-komponen")
    return found


def _settle(open_headings: list[list], found: dict[str, str], rules: ScoringRules,
            ends) -> None:
    """Close the open headings a new heading ends; record those with enough content."""
    for heading in [h for h in open_headings if ends(h)]:
        open_headings.remove(heading)
        component, _, text, chars = heading
        if chars >= rules.min_content_chars:
            found.setdefault(component, SPACES.sub(" ", text).strip())


# =========================================================================== scoring

def score_publication(pages: dict[str, PageAnalysis], rules: ScoringRules) -> Publication:
    """Score the pages read (path -> analysis): an item counts when any page publishes it."""
    evidence: dict[str, str] = {}
    for path, page in pages.items():
        for component, heading in page.found.items():
            evidence.setdefault(component, f"{path}: {heading}")
        if page.lapor_link:
            evidence.setdefault(rules.lapor_id, f"{path}: link")
    weights = {c.id: c.weight for c in rules.components} | {rules.lapor_id: rules.lapor_weight}
    total = sum(weights.values())
    score = round(100 * sum(weights[i] for i in evidence) / total, 1) if total else 0.0
    return Publication(
        score=score,
        band=rules.band(score).grade,
        components={item: item in evidence for item in rules.ids},
        evidence=evidence,
        pages=tuple(pages),
    )


def publication_checks(publication: Publication, rules: ScoringRules) -> list[CheckResult]:
    """One check per scored item: found (with where) or not on the pages read."""
    read = f"not on the {len(publication.pages)} page(s) read"
    return [result(f"publication.{item}", Status.PASS, publication.evidence[item])
            if publication.components[item]
            else result(f"publication.{item}", Status.FAIL, f"{rules.label(item, 'en')} {read}")
            for item in rules.ids]


def missing_items(pages: dict[str, PageAnalysis], rules: ScoringRules) -> set[str]:
    """Items no page read so far publishes (reading stops early when this is empty)."""
    seen = {c for page in pages.values() for c in page.found}
    if any(page.lapor_link for page in pages.values()):
        seen.add(rules.lapor_id)
    return set(rules.ids) - seen


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
    """The path (and query) of url when it is on the same scheme, host and port as base."""
    base, target = urlsplit(base_url), urlsplit(url)
    if target.scheme or target.netloc:
        if (target.scheme, target.hostname, target.port) != (base.scheme, base.hostname,
                                                            base.port):
            return None
        path, query = target.path or "/", target.query
    else:
        path, query = _relative_path(base.path or "/", target.path, target.query)
    if PurePosixPath(path).name.lower() in ("index.html", "index.htm", "index.php"):
        path = path.rsplit("/", 1)[0] + "/"
    return path + (f"?{query}" if query else "")


@functools.lru_cache(maxsize=4096)
def _relative_path(base_path: str, path: str, query: str) -> tuple[str, str]:
    """A relative reference resolved against a base path (the same few links recur on
    every site built from one template, hence the cache)."""
    joined = urlsplit(urljoin(f"http://x{base_path}", path or ""))
    return joined.path or "/", query


def pages_from_links(page: PageAnalysis, base_url: str, rules: ScoringRules) -> list[str]:
    """Same-site pages the home page links to that may hold service standards, best first."""
    here = same_site_path(base_url, base_url)
    ranked: dict[str, int] = {}
    for href, text in page.links:
        rank = next((i for i, p in enumerate(rules.link_patterns)
                     if p.search(href) or p.search(text)), None)
        if rank is None or href.startswith(("mailto:", "tel:", "javascript:")):
            continue
        path = same_site_path(href, base_url)
        if path is None or path == here or ranked.get(path, rank + 1) <= rank:
            continue
        if PurePosixPath(urlsplit(path).path).suffix.lower() not in rules.skip_extensions:
            ranked[path] = rank
    return sorted(ranked, key=ranked.__getitem__)[:rules.max_pages]


def pages_from_data(text: str, base_url: str, rules: ScoringRules) -> list[str] | None:
    """Pages named by a standar-pelayanan.json of the expected schema; None when it is not one."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("schema") != rules.data_schema:
        return None
    urls = [s.get("url") for s in document.get("services") or [] if isinstance(s, dict)]
    for key in ("maklumat", "pengaduan"):
        section = document.get(key)
        if isinstance(section, dict):
            urls.append(section.get("url"))
    paths = [same_site_path(u, base_url) for u in urls if isinstance(u, str)]
    return list(dict.fromkeys(p for p in paths if p))[:rules.max_pages]
