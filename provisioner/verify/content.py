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
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, TypeVar
from urllib.parse import urljoin, urlsplit

import yaml
from lxml import etree

from ..errors import InputError, Problem
from .model import CheckResult, Publication, Status, result

RULES_FILE = Path(__file__).resolve().parent.parent / "data" / "scoring.yml"
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 8x faster

SKIP_TAGS = frozenset(("script", "style", "noscript", "template", "svg"))
HEADING_RANKS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6, "dt": 7, "th": 7}
LABEL_RANK = 7  # strong/b labels and label cells: the lowest heading rank
LABEL_TAGS = frozenset(("strong", "b"))
BLOCK_TAGS = frozenset(
    "p li div td dd section article blockquote main body figure form details summary".split())
CONTAINERS_OF_HEADERS = frozenset(("main", "article", "section"))
SPACES = re.compile(r"\s+")
LEADING_TEXT_CHARS = 2000
MEMO_SIZE = 20_000  # remembered heading texts, class names and links, each, per rule set
K = TypeVar("K", bound=Hashable)
NOT_ASCII_ALNUM = bytes(b for b in range(256) if b > 127 or not chr(b).isalnum())
NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def word_chars(text: str) -> int:
    """Letters and digits in a text (str.isalnum): what "non-trivial content" is measured
    in. Counted on the UTF-8 bytes, then the rare non-ASCII runs: 2.5x faster than one
    regular expression over the text, and it runs over every page twice."""
    count = len(text.encode("utf-8", "surrogatepass").translate(None, NOT_ASCII_ALNUM))
    for run in NON_ASCII.findall(text):
        count += sum(map(str.isalnum, run))
    return count


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
    _class_memo: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    _heading_memo: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)
    _link_memo: dict[tuple[str, str], int | None] = field(default_factory=dict, repr=False,
                                                          compare=False)

    @functools.cached_property
    def ids(self) -> tuple[str, ...]:
        """Every scored item, in report order: the components, the maklumat, the LAPOR! link."""
        return (*(c.id for c in self.components), self.lapor_id)

    @functools.cached_property
    def nothing_published(self) -> Publication:
        """The score of a site none of whose pages could be read (shared: never mutated)."""
        return score_publication({}, self)

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
        return _remember(self._class_memo, names, self._names_excluded)

    def _names_excluded(self, names: str) -> bool:
        return any(self.exclude_class.search(name) for name in names.split())

    def component_for(self, heading: str) -> str | None:
        """The component a heading names, if any (headings repeat across sites: memoised)."""
        return _remember(self._heading_memo, heading, self._match_heading)

    def link_rank(self, href: str, text: str) -> int | None:
        """How likely a link leads to service standards (0 best), None if not at all. The
        same menu links recur on every page of a site and across sites: memoised."""
        return _remember(self._link_memo, (href, text), self._match_link)

    def _match_link(self, link: tuple[str, str]) -> int | None:
        return next((i for i, p in enumerate(self.link_patterns)
                     if p.search(link[0]) or p.search(link[1])), None)

    def _match_heading(self, heading: str) -> str | None:
        text = normalise_heading(heading, self.enumeration)
        if not text or len(text) > self.max_heading_chars:
            return None
        return next((rule.id for rule in self.components if rule.headings.fullmatch(text)), None)


def _remember(memo: dict[K, Any], key: K, compute: Callable[[K], Any]) -> Any:
    """memo[key], computed once (bounded: the headings, class names and links of every
    site swept)."""
    try:
        return memo[key]
    except KeyError:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        value = memo[key] = compute(key)
        return value


def normalise_heading(text: str, enumeration: re.Pattern) -> str:
    text = SPACES.sub(" ", text.replace("\xa0", " ")).strip().lower()
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


def _rules_from(data: dict[str, Any]) -> ScoringRules:
    flags = re.IGNORECASE
    components = tuple(
        ComponentRule(id=c["id"], label=dict(c["label"]), weight=float(c["weight"]),
                      headings=re.compile("|".join(f"(?:{p})" for p in c["headings"]), flags),
                      markers=tuple(c["markers"]))
        for c in data["components"])
    lapor, headings, exclude = data["lapor"], data["headings"], data["exclude"]
    content, discovery = data["content"], data["discovery"]
    words = exclude["class_or_id_words"]
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
        exclude_class=re.compile("(^|[-_])(" + "|".join(map(re.escape, words)) + ")($|[-_])",
                                 flags),
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
class Published:
    """What one page publishes: components (id -> evidence) and the SP4N-LAPOR! link."""

    found: dict[str, str]
    lapor_link: bool


@dataclass(frozen=True)
class PageAnalysis(Published):
    """The home page: what it publishes, its links, and whether it is real content."""

    links: tuple[tuple[str, str], ...]  # (href, link text), in document order
    title: str
    headline: str  # the title and the h1 headings: where default pages give themselves away
    text_chars: int  # letters and digits of the main content
    leading_text: str


HEADING_TAGS = tuple(HEADING_RANKS)
CANDIDATE_TAGS = (*HEADING_TAGS, "td", "strong", "b")
SENTINEL = "\ue000"  # a private-use character: stands for a heading in the linear text
MARKED = etree.XPath(".//*[@data-komponen]")
HEADING_MARK = re.compile(SENTINEL + "[0-9]+" + SENTINEL)
CHROME_ATTRIBUTES = etree.XPath("//@role|//@class|//@id")
HREFS = etree.XPath("//a/@href", smart_strings=False)
XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
NOTHING = PageAnalysis({}, False, (), "", "", 0, "")


def analyse_page(html: str, rules: ScoringRules) -> PageAnalysis:
    """Read a home page: which components it publishes, its links and its main text.

    libxml2 (lxml) builds the tree; Python only visits the links, the candidate headings
    and the text between them, never every element (that made reading twice as costly).
    """
    root = _parse(html)
    if root is None:
        return NOTHING
    links = tuple((a.get("href", "").strip(), _text(a).strip()) for a in root.iter("a"))
    title = SPACES.sub(" ", " ".join(_text(t) for t in root.iter("title"))).strip()
    h1 = [SPACES.sub(" ", _text(h)).strip() for h in root.iter("h1")]
    headings, pieces, found = _read_main(root, rules)
    text = "".join(p if i % 2 == 0 else headings[int(p)][2] for i, p in enumerate(pieces))
    return PageAnalysis(
        found=found,
        lapor_link=any(_is_lapor(href, rules) for href, _ in links),
        links=links,
        title=title,
        headline=" | ".join([title, *h1]),
        text_chars=word_chars(text),
        leading_text=SPACES.sub(" ", text[:LEADING_TEXT_CHARS * 2]).strip()[:LEADING_TEXT_CHARS],
    )


def read_published(html: str, rules: ScoringRules) -> Published:
    """Read another page of the site: only what it publishes (half a home page's work)."""
    root = _parse(html)
    if root is None:
        return NOTHING
    lapor = any(_is_lapor(href.strip(), rules) for href in HREFS(root))
    _, _, found = _read_main(root, rules)
    return Published(found, lapor)


def _read_main(root: etree._Element, rules: ScoringRules) -> tuple[
        list[tuple[str | None, int, str]], list[str], dict[str, str]]:
    """Drop the chrome, then find the components of the main content: (its headings, its
    text split on the heading sentinels, the components found)."""
    for element in _chrome(root, rules):
        _drop(element)
    scope = next(root.iter("main"), None)
    if scope is None:
        scope = next(root.iter("body"), root)
    headings = _headings(scope, rules)
    pieces = "".join(scope.itertext()).split(SENTINEL)
    found = _components_in(pieces, headings, rules)
    found |= _marked_components(scope, rules, skip=found)
    return headings, pieces, found


def _parse(html: str) -> etree._Element | None:
    parser = etree.HTMLParser(no_network=True, remove_comments=True, remove_pis=True,
                              collect_ids=False)  # ids are never looked up: -12 % parse time
    try:
        if html.lstrip().startswith("<?xml"):
            html = XML_DECLARATION.sub("", html, count=1)
        root = etree.fromstring(html.replace(SENTINEL, ""), parser)
    except (etree.XMLSyntaxError, ValueError):
        return None  # an empty document
    if root is not None:
        etree.strip_elements(root, *SKIP_TAGS, with_tail=False)
    return root


def _text(element: etree._Element) -> str:
    return "".join(element.itertext())


def _is_lapor(href: str, rules: ScoringRules) -> bool:
    return "lapor" in href and (urlsplit(href).hostname or "").lower() in rules.lapor_hosts


def _chrome(root: etree._Element, rules: ScoringRules) -> list[etree._Element]:
    """Menus, footers, sidebars and page headers: never main content."""
    chrome = list(root.iter(*rules.exclude_tags))
    if rules.header_outside_main:
        chrome += [h for h in root.iter("header")
                   if next(h.iterancestors(*CONTAINERS_OF_HEADERS), None) is None]
    for value in CHROME_ATTRIBUTES(root):  # the attribute values alone: 2x faster than elements
        if (value.lower() in rules.exclude_roles if value.attrname == "role"
                else rules.excludes_names(str(value))):
            chrome.append(value.getparent())
    return chrome


def _drop(element: etree._Element) -> None:
    """Remove an element and its content, keeping the text that follows it."""
    parent = element.getparent()
    if parent is None:
        return
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def _marked_components(scope: etree._Element, rules: ScoringRules,
                       skip: dict[str, str]) -> dict[str, str]:
    """Elements marked data-komponen="..." holding text besides their headings (which
    _headings has already replaced by sentinels)."""
    found = {}
    for element in MARKED(scope):
        component = rules.markers.get(element.get("data-komponen").strip().lower())
        if component and component not in skip and component not in found:
            if word_chars(HEADING_MARK.sub("", _text(element))) >= rules.min_content_chars:
                found[component] = "data-komponen"
    return found


def _headings(scope: etree._Element, rules: ScoringRules) -> list[tuple[str | None, int, str]]:
    """The headings of the main content as (component, rank, text), in document order; each
    is replaced in the tree by SENTINEL + its index, so the text around it can be measured.

    Headings are h1-h6, dt and th; a strong/b at the start of a block (a label), and a
    table cell holding only a component's name."""
    headings: list[tuple[str | None, int, str]] = []
    inside_taken: set[etree._Element] = set()
    for element in list(scope.iter(*CANDIDATE_TAGS)):
        if element in inside_taken:
            continue  # inside a heading already taken
        text = _text(element)
        rank = HEADING_RANKS.get(element.tag, LABEL_RANK)
        if element.tag not in HEADING_RANKS:
            if not 0 < len(text.strip()) <= rules.max_heading_chars:
                continue
            component = rules.component_for(text)
            if element.tag == "td" and component is None:
                continue  # an ordinary table cell
            if element.tag != "td" and not _at_block_start(element):
                continue  # emphasis inside a sentence
        else:
            component = rules.component_for(text)
        inside_taken.update(element.iterdescendants(*CANDIDATE_TAGS))
        for child in list(element):
            element.remove(child)
        element.text = f"{SENTINEL}{len(headings)}{SENTINEL}"
        headings.append((component, rank, text))
    return headings


def _at_block_start(element: etree._Element) -> bool:
    """No text before the element inside its block (p, li, div, td, ...)."""
    node = element
    while True:
        parent = node.getparent()
        if parent is None:
            return True
        for sibling in node.itersiblings(preceding=True):
            if _text(sibling).strip() or (sibling.tail or "").strip():
                return False
        if (parent.text or "").strip():
            return False
        if parent.tag in BLOCK_TAGS:
            return True
        node = parent


def _components_in(pieces: list[str], headings: list[tuple[str | None, int, str]],
                   rules: ScoringRules) -> dict[str, str]:
    """Components whose heading is followed by enough text before the next heading of the
    same or a higher rank (or the next component heading). ``pieces`` alternates text and
    heading indexes, as split on SENTINEL."""
    found: dict[str, str] = {}
    open_headings: list[list] = []  # [component, rank, heading text, letters so far]

    def add(chars: int) -> None:
        for heading in open_headings:
            heading[3] += chars

    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            if open_headings and piece:
                add(word_chars(piece))
            continue
        component, rank, text = headings[int(piece)]
        _settle(open_headings, found, rules, ends=lambda h: component or h[1] >= rank)
        if component:
            open_headings.append([component, rank, text, 0])
        else:
            add(word_chars(text))  # a minor label ("KTP:") is content of what it is under
    _settle(open_headings, found, rules, ends=lambda h: True)
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

def score_publication(pages: dict[str, Published], rules: ScoringRules) -> Publication:
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


def missing_items(pages: dict[str, Published], rules: ScoringRules) -> set[str]:
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
    if path.rsplit("/", 1)[-1].lower() in ("index.html", "index.htm", "index.php"):
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
        rank = rules.link_rank(href, text)
        if rank is None or href.startswith(("mailto:", "tel:", "javascript:")):
            continue
        path = same_site_path(href, base_url)
        if path is None or path == here or ranked.get(path, rank + 1) <= rank:
            continue
        if _suffix(urlsplit(path).path) not in rules.skip_extensions:
            ranked[path] = rank
    return sorted(ranked, key=ranked.__getitem__)[:rules.max_pages]


def _suffix(path: str) -> str:
    """The extension of a URL path's last segment, lower-cased (".pdf")."""
    return posixpath.splitext(path.rsplit("/", 1)[-1])[1].lower()


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
