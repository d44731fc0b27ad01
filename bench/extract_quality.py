"""Quality and speed of full-content extraction on a generated, labelled set of article pages.

Prints token precision, recall and F1 of the text our pipeline *stores* (extract, sanitise,
write to SQLite, read back) beside trafilatura run alone on the same pages, and beside our
pipeline with a content_selector configured per layout; then pages per second on one core
and the peak RSS. Figures are printed, never asserted.

    .venv/bin/python bench/extract_quality.py [--stories 8] [--seed 3] [--repeat 3] [--pad 60]

Each page is one story (news text generated as in dedupe_quality.py, in English, German and
French, with lists and tables in some) poured into one of eight layouts: a news site with
cookie banner, share bar, related links and comments; a blog with widgets and long comments;
a magazine with pull quotes and inline "read more" links; a table layout of the 2000s with
<br> paragraphs; a scraped page with the icon line and the headline twice; div soup with a
newsletter box inside the story; a docs-like page with a table of figures; and a theme that
wraps the story in an element named like a sidebar. The truth of a page is its story body:
paragraphs, list items and table cells, without the headline (entries carry it as title).
Every page also carries `--pad` KB of menu links, so that its weight is a real page's.
"""

from __future__ import annotations

import argparse
import html
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import trafilatura
from dedupe_quality import CHROME, KINDS, Story, make_story

from aggregator.ingest.extract import extract_article, normalised_text
from aggregator.ingest.identity import identify
from aggregator.models import ParsedEntry, PollRecord
from aggregator.store import articles as article_store
from aggregator.store.articles import Article
from aggregator.store.sqlite import SqliteStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_WORD = re.compile(r"\w+", re.UNICODE)

# Two stories of other languages, slot-filled the same way.
EXTRA_KINDS = {
    "haushalt": {
        "headlines": ["Stadtrat von {city} beschließt Haushalt", "{city} spart bei Bauprojekten"],
        "sentences": [
            "Der Stadtrat von {city} hat am {day} einen Haushalt von {k} Millionen Euro "
            "beschlossen.",
            "Bürgermeisterin {person} sprach von einem schwierigen, aber ehrlichen Kompromiss.",
            "Für Schulen und Kitas stehen {k2} Millionen Euro mehr zur Verfügung als im Vorjahr.",
            "Die Opposition kritisierte, dass die Sanierung der Brücke erneut verschoben wird.",
            "Die Gewerbesteuer bleibt unverändert, die Grundsteuer steigt um {pct} Prozent.",
            "Im {month} soll ein Bürgerforum über die Pläne für den Bahnhof beraten.",
        ],
    },
    "transports": {
        "headlines": ["{city} : le tramway prolongé jusqu'à l'aéroport", "Nouveau tram à {city}"],
        "sentences": [
            "La métropole de {city} a inauguré {day} le prolongement de sa ligne de tramway.",
            "Les travaux ont duré {n} ans et coûté près de {k} millions d'euros.",
            "Selon le maire, {person}, la ligne devrait transporter {k2} mille voyageurs par jour.",
            "Les commerçants du centre craignent les effets des chantiers sur leur activité.",
            "Un bus de nuit complétera la desserte le week-end à partir du mois de {month}.",
            "Les associations d'usagers saluent un progrès mais réclament des rames plus longues.",
        ],
    },
}
ALL_KINDS = {**KINDS, **EXTRA_KINDS}


@dataclass(frozen=True)
class Page:
    layout: str
    title: str
    html: str
    truth: str  # the story's text


@dataclass(frozen=True)
class Body:
    """A story body: its HTML (as the layout wants it) and its text."""

    html: str
    text: str


def body_html(rnd: random.Random, story: Story, paragraph: Callable[[str], str]) -> Body:
    parts = [paragraph(html.escape(p)) for p in story.paragraphs]
    texts = list(story.paragraphs)
    if rnd.random() < 0.4:
        items = [f"{s.split(',')[0].rstrip('.')}." for s in story.paragraphs[:3]]
        parts.insert(1, "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
        texts[1:1] = items
    if rnd.random() < 0.3:
        rows = [("Year", "Value"), *((str(2019 + i), str(rnd.randint(10, 99))) for i in range(4))]
        cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f"<table>{cells}</table>")
        texts.extend(" ".join(row) for row in rows)
    return Body("\n".join(parts), " ".join(texts))


NAV = (
    '<nav class="menu">'
    + " ".join(
        f'<a href="/{s.lower()}/">{s}</a>'
        for s in ("Home", "World", "Business", "Politics", "Sport", "Culture", "Opinion")
    )
    + "</nav>"
)
RELATED = (
    '<aside class="related"><h3>Related stories</h3><ul>'
    + "".join(f'<li><a href="/news/{i}/">Another story about the region, part {i}</a></li>'
              for i in range(5))
    + "</ul></aside>"
)  # fmt: skip
FOOTER = (
    "<footer><p>© 2024 Example Media. All rights reserved.</p>"
    "<a href='/privacy'>Privacy</a></footer>"
)
COOKIE = (
    "<div class='cookie-banner'><p>We use cookies to give you the best experience on our "
    "site. By continuing you agree.</p><button>OK</button></div>"
)
SHARE = "<div class='share'>Share on Facebook · Share on Twitter · Email · Print</div>"


def comments(rnd: random.Random, long: bool) -> str:
    text = (
        "I have lived here for twenty years and I have never seen anything like this, the "
        "council should have acted long ago and everybody knows it."
        if long
        else "Great article, thanks!"
    )
    return (
        "<section id='comments'><h3>Comments</h3>"
        + "".join(
            f"<div class='comment'><b>user{rnd.randint(1, 999)}</b><p>{text}</p></div>"
            for _ in range(rnd.randint(2, 4))
        )
        + "</section>"
    )


def layout_news(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"<p>{p}</p>")
    page = (
        f"{COOKIE}<header><a href='/'>Example News</a>{NAV}</header><main>{SHARE}"
        f"<p class='date'>1 May 2024, 10:{rnd.randint(10, 59)}</p><h1>{title}</h1>"
        f"<article class='story'>{b.html}</article>{RELATED}{comments(rnd, False)}</main>{FOOTER}"
    )
    return page, b


def layout_blog(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"<p>{p}</p>")
    widgets = (
        "<div id='sidebar'><h2>Archives</h2><ul><li><a href='/2024/04/'>April 2024</a></li>"
        "<li><a href='/2024/03/'>March 2024</a></li></ul><h2>Tags</h2><p>"
        + " ".join(f"<a href='/tag/{t}'>{t}</a>" for t in ("politics", "travel", "rail", "food"))
        + "</p></div>"
    )
    page = (
        f"<div id='header'><h1 class='site-title'>A small blog</h1>{NAV}</div>"
        f"<div id='content'><div class='post'><h2 class='entry-title'>{title}</h2>"
        f"<div class='entry-content'>{b.html}</div><p class='postmetadata'>Posted in "
        f"<a href='/cat/news'>News</a> | <a href='#comments'>4 Comments</a></p></div>"
        f"{comments(rnd, True)}</div>{widgets}{FOOTER}"
    )
    return page, b


def layout_magazine(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"<p>{p}</p>")
    first, _, rest = b.html.partition("\n")
    quote = html.escape(s.paragraphs[0].split(".")[0])
    page = (
        f"<header>{NAV}</header><article><header><h1>{title}</h1><p class='byline'>By "
        f"{s.slots['person']}</p></header><figure><img src='/img/{rnd.randint(1, 99)}.jpg' "
        f"alt='photo'><figcaption>Photo: agency</figcaption></figure>{first}"
        f"<aside class='pullquote'>“{quote}”</aside>"
        f"<p class='inline-related'><a href='/news/x/'>Read more: what happened last year</a></p>"
        f"{rest}<div class='tags'><a href='/t/a'>Tag one</a> <a href='/t/b'>Tag two</a></div>"
        f"</article>{RELATED}{FOOTER}"
    )
    return page, b


def layout_table(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"{p}<br><br>")
    nav = "<br>".join(f"<a href='/{i}.html'>Section {i}</a>" for i in range(8))
    page = (
        f"<table width='100%'><tr><td class='nav' width='150'>{nav}</td><td class='main'>"
        f"<font size='4'><b>{title}</b></font><br><br><font size='2'>{b.html}</font></td>"
        f"</tr></table><center><font size='1'>Copyright 2004 Example Press</font></center>"
    )
    return page, b


def layout_scraped(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"<p>{p}</p>")
    page = (
        f"<div class='page'><p>{CHROME[0]}</p><p>1 May, 2024 10:{rnd.randint(10, 59)}</p>"
        f"<h1>{title}</h1><p>{title}</p>{b.html}</div><p>{CHROME[2]}</p>{FOOTER}"
    )
    return page, b


def layout_divs(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"<div class='para'>{p}</div>")
    first, _, rest = b.html.partition("\n")
    box = (
        "<div class='newsletter'><h4>Get our morning briefing</h4><div>Sign up for the "
        "newsletter and never miss a story.</div><form><input></form></div>"
    )
    page = (
        f"<div class='wrap'><div class='top'>{NAV}</div><div class='col'><div class='hd'>"
        f"<div class='t'>{title}</div></div><div class='bd'>{first}{box}{rest}</div></div>"
        f"<div class='col2'>{RELATED}</div></div>{FOOTER}"
    )
    return page, b


def layout_docs(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"<p>{p}</p>")
    toc = (
        "<nav class='toc'><ul><li><a href='#a'>Overview</a></li>"
        "<li><a href='#b'>Details</a></li></ul></nav>"
    )
    page = (
        f"<header>{NAV}</header>{toc}<main><section><h1>{title}</h1>{b.html}</section>"
        f"<section class='feedback'><p>Was this page helpful? Yes / No</p></section></main>"
        f"{FOOTER}"
    )
    return page, b


def layout_theme(rnd: random.Random, s: Story, title: str) -> tuple[str, Body]:
    b = body_html(rnd, s, lambda p: f"<p>{p}</p>")
    page = (
        f"<header>{NAV}</header><div class='layout'><h1>{title}</h1>"
        f"<div class='sidebar-content footer-area'>{b.html}</div>"
        f"<div class='widgets'>{RELATED}</div></div>{FOOTER}"
    )
    return page, b


Builder = Callable[[random.Random, Story, str], tuple[str, Body]]
LAYOUTS: dict[str, tuple[Builder, str, tuple[str, ...]]] = {
    # name: (builder, content_selector, remove_selectors) as an operator would configure them
    "news": (layout_news, "article.story", ()),
    "blog": (layout_blog, ".entry-content", ()),
    "magazine": (layout_magazine, "article",
                 ("header", "figure", ".pullquote", ".inline-related", ".tags")),
    "table": (layout_table, "td.main font[size='2']", ()),
    "scraped": (layout_scraped, "div.page", ()),
    "divs": (layout_divs, "div.bd", (".newsletter",)),
    "docs": (layout_docs, "main section:first-child", ()),
    "theme": (layout_theme, "div.sidebar-content", ()),
}  # fmt: skip


def mega_menu(kb: int) -> str:
    """Site chrome of about `kb` kilobytes: real pages weigh 50-500 KB, mostly menus, footers
    and scripts, and that weight is what extraction time grows with."""
    item = "<li><a href='/section/{0}/'>Section {0} of the site</a></li>"
    items = "".join(item.format(i) for i in range(kb * 1024 // 60))
    return f"<div class='mega-menu'><ul>{items}</ul></div>"


def build_pages(rnd: random.Random, per_layout: int, pad_kb: int = 0) -> list[Page]:
    kinds = sorted(ALL_KINDS)
    menu = mega_menu(pad_kb) if pad_kb else ""
    pages = []
    for name, (build, _, _) in LAYOUTS.items():
        for i in range(per_layout):
            kind = kinds[(i + len(pages)) % len(kinds)]
            story = _story(rnd, kind)
            title = html.escape(story.headline)
            inner, body = build(rnd, story, title)
            doc = (
                f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title} | Example"
                f"</title><script>var ads = [];</script></head><body>{menu}{inner}</body></html>"
            )
            pages.append(Page(name, story.headline, doc, body.text))
    return pages


def _story(rnd: random.Random, kind: str) -> Story:
    if kind in KINDS:
        return make_story(rnd, kind)
    # make_story reads dedupe_quality's KINDS; the extra kinds are filled the same way.
    KINDS[kind] = EXTRA_KINDS[kind]
    try:
        return make_story(rnd, kind)
    finally:
        del KINDS[kind]


def tokens(text: str) -> Counter[str]:
    return Counter(w.lower() for w in _WORD.findall(text))


def prf(got: str, truth: str) -> tuple[float, float, float]:
    g, t = tokens(got), tokens(truth)
    common = sum((g & t).values())
    p = common / sum(g.values()) if g else 0.0
    r = common / sum(t.values()) if t else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def trafilatura_alone(page: Page) -> str:
    return trafilatura.extract(page.html, output_format="txt", include_tables=True) or ""


class Pipeline:
    """Our pipeline end to end: extract (sanitised), then the real store path — the poll's
    write queues the entry, the article's record applies it — and the stored content read
    back as text."""

    def __init__(self, db: Path, use_selectors: bool) -> None:
        self.store = SqliteStore(db)
        self.use_selectors = use_selectors
        self.n = 0

    def __call__(self, page: Page) -> str:
        self.n += 1
        feed = f"bench-{int(self.use_selectors)}"
        selector, remove = (LAYOUTS[page.layout][1:]) if self.use_selectors else (None, ())
        url = f"https://site.example/{page.layout}/{self.n}/"
        found = extract_article(
            page.html.encode(), "text/html; charset=utf-8", url,
            title=page.title, selector=selector, remove=remove,
        )  # fmt: skip
        parsed = ParsedEntry(
            f"g{self.n}", False, url, page.title, "A first sentence.", "", "", (), T0, None
        )
        [entry] = identify(feed, [parsed], T0)
        rec = PollRecord(feed, "https://site.example/feed", T0, "ok", None, new=(entry,))
        self.store.record_poll(rec)
        article_store.mark_entries(self.store, rec, lambda name: True)
        result = (
            Article(url, found.html, found.text_length, found.method)
            if found.found
            else Article(url, error=found.reason)
        )
        article_store.record(self.store, article_store.match_key(url), result, T0)
        [item] = [s for s in self.store.iter_entries([feed]) if s.entry.key == entry.key]
        return normalised_text(item.entry.content)


def score(name: str, pages: list[Page], run: Callable[[Page], str]) -> dict[str, float]:
    by_layout: dict[str, list[tuple[float, float, float]]] = {}
    for page in pages:
        by_layout.setdefault(page.layout, []).append(prf(run(page), page.truth))
    every = [x for v in by_layout.values() for x in v]
    mean = [sum(x[i] for x in every) / len(every) for i in range(3)]
    cells = "  ".join(
        f"{layout} {sum(x[2] for x in v) / len(v):.2f}" for layout, v in by_layout.items()
    )
    print(f"{name:<26} P {mean[0]:.3f}  R {mean[1]:.3f}  F1 {mean[2]:.3f}   F1 by layout: {cells}")
    return {"p": mean[0], "r": mean[1], "f1": mean[2]}


def pages_per_second(pages: list[Page], repeat: int, fn: Callable[[Page], object]) -> float:
    started = time.process_time()  # CPU of this process: one core, whatever else runs
    for _ in range(repeat):
        for page in pages:
            fn(page)
    return repeat * len(pages) / (time.process_time() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=8, help="pages per layout (8 layouts)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="passes over the set for pages/s")
    ap.add_argument("--pad", type=int, default=60, help="KB of menus added to every page")
    args = ap.parse_args()
    pages = build_pages(random.Random(args.seed), args.stories, args.pad)
    size = sum(len(p.html.encode()) for p in pages) / len(pages)
    print(f"pages: {len(pages)} in {len(LAYOUTS)} layouts, {size / 1024:.1f} KB on average")
    with tempfile.TemporaryDirectory() as tmp:
        score("trafilatura alone", pages, trafilatura_alone)
        score("ours, stored", pages, Pipeline(Path(tmp) / "a.db", use_selectors=False))
        score("ours, stored, selectors", pages, Pipeline(Path(tmp) / "b.db", use_selectors=True))
    alone = pages_per_second(pages, args.repeat, trafilatura_alone)
    ours = pages_per_second(
        pages,
        args.repeat,
        lambda p: extract_article(
            p.html.encode(), "text/html", "https://s.example/", title=p.title
        ),
    )
    print(
        f"pages/s on one core (CPU time): trafilatura alone {alone:.1f}, our extraction {ours:.1f}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
