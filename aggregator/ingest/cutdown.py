"""A fetched XML document cut down to the limits before feedparser reads it. Pure, one pass."""

from __future__ import annotations

import functools
import re

from ..ingest.limits import Limits, Tally

# Text runs (and CDATA sections) longer than their field's limit are truncated; elements nested
# deeper than max_nesting, entries past max_entries_per_document, and an entry's elements or
# <link>s past their limits are dropped whole, start tag to end tag, so the document stays
# well-formed. A document in an encoding this byte scanner cannot read (UTF-16, UTF-32) is left
# as it is: the parse deadline still bounds it.

# A start or end tag (with its name), a CDATA section, a comment, a processing instruction,
# or any other declaration; the end of each is found with bytes.find, never a lazy regex.
_MARKUP = re.compile(rb"<(?:(/?)([A-Za-z_][-.:\w]*)|(!\[CDATA\[)|(!--)|(\?)|(!))")
# The rest of a tag up to its ">": a ">" inside a quoted attribute value (category="a > b") is
# legal XML and must not end it. The quantifiers are possessive (never give back what they
# took): with plain ones a tag with an unclosed quote (<a bbbb") made the engine retry every way
# of splitting the run of "b"s between the inner + and the outer *, doubling the time with every
# byte. Possessive, each byte is looked at once, and an unclosed quote simply finds no ">".
_TAG_END = re.compile(rb"""(?:[^>"']++|"[^"]*+"|'[^']*+')*+>""")
_ENTRY_NAMES = frozenset({b"item", b"entry"})
_AUTHOR_NAMES = frozenset(
    {
        b"author",
        b"creator",
        b"name",
        b"email",
        b"contributor",
        b"publisher",
        b"managingEditor",
        b"webMaster",
        b"owner",
    }
)
_WIDE = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


@functools.lru_cache(maxsize=64)
def _end_tag(name: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"</" + re.escape(name) + rb"\s*>")


def _local(name: bytes) -> bytes:
    return name.rpartition(b":")[2]


def _safe_cut(body: bytes, start: int, cut: int) -> int:
    """`cut` moved back so that it splits neither a UTF-8 character nor an entity reference."""
    while cut > start and body[cut] & 0xC0 == 0x80:
        cut -= 1
    amp = body.rfind(b"&", max(start, cut - 12), cut)
    if amp >= 0 and body.find(b";", amp, cut) < 0:
        cut = amp
    return cut


class _Cutter:
    """The state of one pass: removed byte ranges, the open elements, the current entry."""

    def __init__(self, body: bytes, limits: Limits, tally: Tally) -> None:
        self.body = body
        self.limits = limits
        self.tally = tally
        self.removed: list[tuple[int, int]] = []
        self.stack: list[bytes] = []  # local names of the open elements (never past the limit)
        self.entries = 0
        self.feed_elements = 0  # elements outside any entry, entries themselves not counted
        self.entry_depth = -1  # depth of the open entry's element; -1 outside any entry
        self.entry_elements = 0
        self.entry_links = 0
        self.skip_depth = 0  # > 0 while inside a dropped element: how deep inside it
        self.skip_start = 0

    def remove(self, start: int, end: int) -> None:
        if self.removed and not self.body[self.removed[-1][1] : start].strip():
            start = self.removed[-1][0]  # adjacent drops (a run of entries) become one range
            self.removed.pop()
        self.removed.append((start, end))

    def text(self, start: int, end: int) -> None:
        """A text run or CDATA content: truncated past the limit of the field it is in."""
        name = self.stack[-1] if self.stack else b""
        limits = self.limits
        if name == b"title":
            size, key = limits.max_title_size, "max_title_size"
        elif name in _AUTHOR_NAMES:
            size, key = limits.max_author_size, "max_author_size"
        else:
            size, key = limits.max_content_size, "max_content_size"
        if end - start > size:
            cut = _safe_cut(self.body, start, start + size)
            self.remove(cut, end)
            self.tally.add(f"{name.decode('ascii', 'replace') or 'text'} fields truncated", key)

    def drop_reason(self, local: bytes) -> tuple[str, str] | None:
        """Why a start tag opening at the current depth is dropped, if it is."""
        limits = self.limits
        if len(self.stack) >= limits.max_nesting:
            return "elements nested too deep dropped", "max_nesting"
        if self.entry_depth < 0:
            if local in _ENTRY_NAMES:
                self.entries += 1
                if self.entries > limits.max_entries_per_document:
                    return "entries dropped", "max_entries_per_document"
                return None
            # The feed's own elements (100,000 <category>s, say) are bounded as an entry's are.
            self.feed_elements += 1
            if self.feed_elements > limits.max_elements_per_entry:
                return "elements of the feed dropped", "max_elements_per_entry"
            return None
        self.entry_elements += 1
        if self.entry_elements > limits.max_elements_per_entry:
            return "elements of an entry dropped", "max_elements_per_entry"
        if local == b"link":
            self.entry_links += 1
            if self.entry_links > limits.max_links_per_entry:
                return "links of an entry dropped", "max_links_per_entry"
        return None

    def start_tag(self, start: int, end: int, name: bytes, empty: bool) -> int:
        """Handle a start tag ending at `end`; returns where the scan goes on."""
        if self.skip_depth:
            self.skip_depth += not empty
            return end
        local = _local(name)
        reason = self.drop_reason(local)
        if reason is not None:
            self.tally.add(*reason)
            if empty:
                self.remove(start, end)
            elif reason[1] == "max_entries_per_document":
                # Entries past the limit are skipped to their end tag without reading what
                # is inside: a feed of 100,000 entries costs a find per entry, not a parse.
                found = _end_tag(name).search(self.body, end)
                close = found.end() if found is not None else len(self.body)
                self.remove(start, close)
                return close
            else:
                self.skip_depth, self.skip_start = 1, start
            return end
        if empty:
            return end
        if self.entry_depth < 0 and local in _ENTRY_NAMES:
            self.entry_depth = len(self.stack)
            self.entry_elements = self.entry_links = 0
        self.stack.append(local)
        return end

    def end_tag(self, end: int) -> None:
        if self.skip_depth:
            self.skip_depth -= 1
            if not self.skip_depth:
                self.remove(self.skip_start, end)
            return
        if self.stack:
            self.stack.pop()
            if len(self.stack) == self.entry_depth:
                self.entry_depth = -1

    def run(self) -> None:
        body, pos, size = self.body, 0, len(self.body)
        shortest = min(self.limits.max_title_size, self.limits.max_author_size)
        while pos < size:
            m = _MARKUP.search(body, pos)
            start = m.start() if m is not None else size
            if start - pos > shortest and not self.skip_depth:
                self.text(pos, start)
            if m is None:
                return
            if m.group(3):  # CDATA: its content is text
                end = body.find(b"]]>", m.end())
                if end < 0:
                    end = size
                if not self.skip_depth and end - m.end() > shortest:
                    self.text(m.end(), end)
                pos = end + 3
                continue
            if m.group(2) is None:  # comment, processing instruction, declaration
                closer = b"-->" if m.group(4) else b"?>" if m.group(5) else b">"
                end = body.find(closer, m.end())
                if end < 0:
                    return  # unterminated: it runs to the end; feedparser reports it
                pos = end + len(closer)
                continue
            tag_end = _TAG_END.match(body, m.end())
            if tag_end is None:
                return  # an unterminated tag ends the document; feedparser reports it
            end = pos = tag_end.end()
            if m.group(1):
                self.end_tag(end)
            else:
                pos = self.start_tag(start, end, m.group(2), body[end - 2 : end - 1] == b"/")
        if self.skip_depth:  # a dropped element never closed: it runs to the end
            self.remove(self.skip_start, size)


def cut_document(body: bytes, limits: Limits, tally: Tally) -> bytes:
    """`body` within the limits; the same object when nothing had to be cut."""
    if body.startswith(_WIDE) or b"\x00" in body[:4]:
        return body
    cutter = _Cutter(body, limits, tally)
    cutter.run()
    if not cutter.removed:
        return body
    pieces, last = [], 0
    for start, end in cutter.removed:
        pieces.append(body[last:start])
        last = end
    pieces.append(body[last:])
    return b"".join(pieces)
