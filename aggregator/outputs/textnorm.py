"""Script-aware text normalisation for comparing stories: tokens, punctuation, page chrome. Pure.

Latin rules do not carry over: Urdu ends sentences with ۔ and Hindi with ।, Chinese, Japanese
and Thai put no spaces between words, Thai uses hardly any punctuation at all. So punctuation
is any Unicode punctuation character (category P), and text in a script written without spaces
is compared by character n-grams instead of words.
"""

from __future__ import annotations

import re
import unicodedata


def _ranges(codes: list[int]) -> str:
    # A character class body from code points, as ranges: compact and fast for `re`.
    out: list[str] = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        a, b = re.escape(chr(codes[i])), re.escape(chr(codes[j]))
        out.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "".join(out)


# Python's re, not RE2: RE2 has \\p{...} classes, but its Python wrapper builds every match in
# Python and made normalising a story 20 times slower. The classes are built once from the
# Unicode database (the Basic Multilingual Plane: every script a news feed is written in), each
# as one character class, which re matches from a bitmap.
_CATS = [unicodedata.category(chr(c)) for c in range(0x10000)]
# Punctuation that separates menu items or names rather than ending a phrase: a menu
# "Home / World · Sport | Culture" has these and nothing else.
_SEPARATORS = {ord(c) for c in "/\\·•‧∙・-‐‑‒–—―_#&*@%›»"}
# Scripts written without spaces between words: Thai, Lao, Tibetan, Myanmar, Khmer (whose
# vowels are letters of their own), and Han, Hiragana, Katakana.
_ABUGIDA_SPANS = ((0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x0F00, 0x0FFF), (0x1000, 0x109F),
                  (0x1780, 0x17FF))  # fmt: skip
_WIDE_SPANS = ((0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B),
               (0x3041, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF),
               (0x4E00, 0x9FFF), (0xF900, 0xFAFF))  # fmt: skip


def _letters(spans: tuple[tuple[int, int], ...]) -> set[int]:
    return {c for a, b in spans for c in range(a, b + 1) if _CATS[c][0] in "LMN"}


_ABUGIDA_SET = _letters(_ABUGIDA_SPANS)
_UNSPACED_SET = _ABUGIDA_SET | _letters(_WIDE_SPANS)
_WORD_SET = {c for c in range(0x10000) if _CATS[c][0] in "LMN"}
_MARK_SET = {c for c in range(0x10000) if _CATS[c][0] == "M"}
_EXT_B = "\U00020000-\U0003134f"  # the Han ideographs beyond the BMP
_U = _ranges(sorted(_UNSPACED_SET)) + _EXT_B
_MARKS = _ranges(sorted(_MARK_SET))
_TOKEN = re.compile(rf"[{_U}]+|[{_ranges(sorted(_WORD_SET - _UNSPACED_SET))}]+")
_CLUSTER = re.compile(rf"[{_ranges(sorted(_UNSPACED_SET - _MARK_SET))}{_EXT_B}][{_MARKS}]*")
_ABUGIDA = re.compile(f"[{_ranges(sorted(_ABUGIDA_SET))}]")
# An item of a line as a reader sees it: a word, or a whole unspaced run of characters.
_ITEM = re.compile(f"[{_ranges(sorted(_WORD_SET))}{_EXT_B}]+")
_UNSPACED_CHAR = re.compile(f"[{_U}]")
_SENTENCE = re.compile(
    "[" + _ranges([c for c in range(0x10000) if _CATS[c][0] == "P" and c not in _SEPARATORS]) + "]"
)
_WIDE_RANGES = _ranges(sorted(_letters(_WIDE_SPANS))) + _EXT_B
del _WORD_SET, _MARK_SET
# What separates the items of a breadcrumb or a menu ("Home > World › Asia", "News | Sport"),
# with spaces around it: "A/B testing" is a phrase, not a path.
_CRUMB = re.compile(r"\s[>›»|/\\·•]\s")
_WIDE = re.compile(f"[{_WIDE_RANGES}]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
_DIGIT = re.compile(r"[0-9]")

# A run of this many characters of an unspaced script is a phrase of running text: Thai
# separates phrases, not words, with spaces, and a Thai menu item is a word or two.
PHRASE_CHARS = 20
# A line of at least this many items without punctuation is a menu or a row of icon names.
MENU_ITEMS = 12

# Digits of every script as ASCII: one copy of a story may write ٢٠٢٤ and another 2024.
_ZEROS = (0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
          0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0,
          0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0,
          0xAA50, 0xABF0)  # fmt: skip
_FOLD: dict[int, str | None] = {
    z + i: str(i) for z in _ZEROS for i in range(10) if unicodedata.decimal(chr(z + i), -1) == i
}
# Characters that change nothing a reader sees: joiners, soft hyphens, the zero-width space,
# and in Arabic script the optional vowel marks and the elongating tatweel.
_FOLD.update(dict.fromkeys([0xAD, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x640]))
_FOLD.update(dict.fromkeys([*range(0x64B, 0x660), 0x670, *range(0x6D6, 0x6EE)]))
# Letters that Arabic, Persian and Urdu keyboards spell differently: one copy of a story typed
# with Arabic yeh and kaf, another with Farsi ones, or alef with and without hamza.
_FOLD.update({0x64A: "ی", 0x649: "ی", 0x643: "ک", 0x623: "ا", 0x625: "ا", 0x622: "ا", 0x671: "ا"})
_FOLD_RE = re.compile(f"[{_ranges(sorted(_FOLD))}]")


def normalise(text: str) -> str:
    """Text as compared: compatibility forms unified (NFKC: full-width Latin, half-width
    katakana, ligatures), case folded, digits of every script as ASCII, invisible characters
    and optional Arabic vowel marks removed, Arabic-script letter variants unified."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if text.isascii():
        return text
    # re.sub touches only the characters to fold: str.translate with a dict looks up every
    # character, 0.25 ms for a 5 KB story.
    return _FOLD_RE.sub(_fold, text)


def _fold(m: re.Match[str]) -> str:
    return _FOLD[ord(m.group())] or ""


def tokens(text: str, words: list[str] | None = None) -> list[str]:
    """The units two texts are compared by: words in scripts written with spaces; in Chinese
    and Japanese overlapping pairs of characters, in Thai, Lao, Khmer, Myanmar and Tibetan
    overlapping triples of letters (each with its marks), so that word triples become character
    4-grams (letter 5-grams): character trigrams are shared by too many different stories of
    one kind. Punctuation, symbols and spaces separate tokens and are never part of one."""
    if _UNSPACED_CHAR.search(text) is None:
        # Words only: its items are its tokens (`words`, when the caller has them already).
        found: list[str] = _ITEM.findall(text) if words is None else words
        return found
    out: list[str] = []
    for t in _TOKEN.findall(text):
        if _UNSPACED_CHAR.match(t) is None:
            out.append(t)
            continue
        chars: list[str] = _CLUSTER.findall(t)
        # Thai and its neighbours write a vowel as a letter of its own: three of their
        # letters hold about what two Chinese characters do.
        n = 3 if _ABUGIDA.match(t) else 2
        if len(chars) <= n:
            out.append(t)
        else:
            out.extend("".join(chars[i : i + n]) for i in range(len(chars) - n + 1))
    return out


def items(line: str) -> list[str]:
    """A line's words, an unspaced run of characters counting as one (as a reader sees it)."""
    found: list[str] = _ITEM.findall(line)
    return found


def has_sentence_punctuation(line: str) -> bool:
    """True when the line has punctuation of any script that does not merely separate items:
    . , ! ? ; : quotes, brackets, ۔ ، ؟ । 。 、 ， and the rest of Unicode category P."""
    return _SENTENCE.search(line) is not None


def is_chrome(line: str, words: list[str] | None = None) -> bool:
    """A menu, a breadcrumb, a row of share buttons or icon names: no sentence punctuation, no
    phrase of running text in an unspaced script (Thai prose needs no punctuation), and either
    many items or items separated by > › | / ·."""
    found = items(line) if words is None else words
    if has_sentence_punctuation(line):
        return False
    if len(found) < MENU_ITEMS and not (len(found) >= 2 and _CRUMB.search(line)):
        return False
    return not any(len(w) >= PHRASE_CHARS and _UNSPACED_CHAR.search(w) is not None for w in found)


def weight(line: str) -> int:
    """How much text a line holds, in Latin letters' worth: a Chinese or Japanese character
    counts three, a Hangul syllable two, any other character one."""
    if line.isascii():
        return len(line)
    return len(line) + 2 * len(_WIDE.findall(line)) + len(_HANGUL.findall(line))


def is_stamp(line: str, words: list[str] | None = None) -> bool:
    """A date or time stamp in any script ("2024年5月1日 12:30", "١ مايو ٢٠٢٤، ١٢:٣٠"): a
    short line that is mostly digits. Expects normalised text (ASCII digits)."""
    found = items(line) if words is None else words
    if not found or len(found) > 8:
        return False
    digits = sum(len(_DIGIT.findall(w)) for w in found)
    letters = sum(len(w) for w in found) - digits
    return digits >= 4 and letters <= digits


__all__ = [
    "has_sentence_punctuation",
    "is_chrome",
    "is_stamp",
    "items",
    "normalise",
    "tokens",
    "weight",
]
