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


The modules: rules.py (scoring.yml), parse.py (HTML to a bounded tree), reader.py
(the walk that finds labels and content), page.py (what a page publishes), score.py
(the score and its checks), links.py (which pages to read next), text.py (shared text
measures). This package's face is what the verifier, the crawl and the sweep use.
"""

from .links import pages_from_data, ranked_links, same_site_path
from .page import PageAnalysis, Published, analyse_page, read_published
from .parse import flatten_deep
from .reader import Link
from .rules import RULES_FILE, ScoringRules, load_rules
from .score import missing_items, not_content_reason, publication_checks, score_publication
from .text import word_chars

__all__ = ["Link", "PageAnalysis", "Published", "RULES_FILE", "ScoringRules", "analyse_page",
           "flatten_deep", "load_rules", "missing_items", "not_content_reason", "pages_from_data",
           "publication_checks", "ranked_links", "read_published", "same_site_path",
           "score_publication", "word_chars"]
