"""The scoring rules: ``provisioner/data/scoring.yml`` read and checked into
``ScoringRules`` (labels and their variants, content patterns, weights, bands,
what a default or parked page looks like, the crawl's limits), with the matching
of headings and links they answer (remembered, bounded)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, TypeVar

import yaml

from ...errors import InputError, Problem
from ...paths import DATA_DIR
from ..model import Publication
from .score import score_publication
from .text import collapse

RULES_FILE = DATA_DIR / "scoring.yml"
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 8x faster
JOINED = re.compile(r" (?:dan|serta|&|and) |,| ?/ ?")  # "waktu dan biaya", "syarat/prosedur"
MEMO_SIZE = 20_000  # remembered labels, class names and links, each, per rule set
K = TypeVar("K", bound=Hashable)


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
