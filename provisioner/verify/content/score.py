"""The publication score of the pages read, its checks, the items still missing,
and the "real content" test of a home page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..model import CheckResult, Evidence, Publication, Status, result

if TYPE_CHECKING:  # annotations only: rules.py imports this module
    from .page import PageAnalysis, Published
    from .rules import ScoringRules


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
