"""The page reader: one iterative walk over a page's tree (``_Reader``) that finds the
labels naming each component and judges the content under them; the links it
meets (``Link``). ``_Reader`` is ~460 of this module's ~520 lines and stays one class:
its state (open labels, chrome, panels, what is found) is shared by every event of
the walk, and its methods are the walk's steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

from lxml import etree

from .parse import FORM_TOKEN, _bounded_text
from .rules import ScoringRules
from .text import _href_parts, _label_like, _suffix, _tidy, collapse, word_chars

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


@dataclass(frozen=True)
class Link:
    href: str
    text: str  # the link's text (an image's alt), with the block around it when it says nothing
    in_content: bool = False  # in the main content, not in a menu, header, footer or sidebar


MAX_PRE_LINES = 500


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
