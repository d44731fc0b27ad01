"""Tracking parameters of links, from the ClearURLs rules catalog shipped by unalix-rev. Pure.

The catalog is a kept list: global rules (utm_*, fbclid, ref, ...) plus rules scoped to one
site (The Guardian's CMP, the BBC's at_*), each with exceptions where a site needs a parameter
that elsewhere only tracks. Only its query-parameter rules are used: its raw rules rewrite
paths and its redirections unwrap links, both more than naming a page once needs.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import metadata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# unalix-rev is the one package that ships the ClearURLs catalog as data; its code is not used
# (importing it builds an SSL context). courlan's list is a heuristic that also takes `uid`,
# `cid`, `source` and every `ga…`/`gl…` name, which are content ids on many sites: stripping
# them would make different stories one. w3lib has no list of its own.
CATALOG_DIST = "unalix-rev"
CATALOG_PATH = "unalix/package_data/rulesets/data.min.json"

# Names news sites put on feed and share links that the catalog lacks or scopes to one site:
# AT Internet's at_* (the catalog has it for bbc.com only), soc_src/soc_trk (social share
# links), CMP (the catalog has it for theguardian.com only), and the ones our first hand list
# had beyond the catalog. Each is matched against the whole parameter name, ignoring case.
EXTRA_RULES = (
    "at_[a-z_]+",
    "soc_src",
    "soc_trk",
    "cmp",
    "ito",
    "ncid",
    "ocid",
    "igshid",
    "gclsrc",
    "gbraid",
    "wbraid",
    "mtm_[a-z_]+",
    "pk_[a-z_]+",
    "oly_[a-z_]+",
    "_hs[a-z_]*",
    "wt\\.mc_id",
    "sr_share",
)


class CatalogError(RuntimeError):
    """The tracking rules catalog cannot be read: the installation is broken."""


@dataclass(frozen=True, slots=True)
class Provider:
    """One catalog entry: the URLs it applies to, the parameter names it strips there, and the
    URLs exempted from it."""

    name: str
    url: re.Pattern[str]
    params: re.Pattern[str] | None
    exceptions: tuple[re.Pattern[str], ...]

    def applies(self, url: str) -> bool:
        return bool(self.url.match(url)) and not any(x.match(url) for x in self.exceptions)


def _rules(patterns: list[str]) -> re.Pattern[str] | None:
    # A rule names a whole parameter (ClearURLs builds `[?&](rule)=`); a few are written for
    # JavaScript and do not compile here, and those are left out rather than failing the load.
    ok = []
    for p in patterns:
        try:
            re.compile(p)
        except re.error:
            continue
        ok.append(f"(?:{p})")
    return re.compile("|".join(ok), re.IGNORECASE) if ok else None


def _compile(name: str, raw: dict[str, object]) -> Provider | None:
    try:
        url = re.compile(str(raw["urlPattern"]), re.IGNORECASE)
    except (KeyError, re.error):
        return None
    rules = [str(r) for r in raw.get("rules", []) or []]  # type: ignore[attr-defined]
    rules += [str(r) for r in raw.get("referralMarketing", []) or []]  # type: ignore[attr-defined]
    exceptions = []
    for x in raw.get("exceptions", []) or []:  # type: ignore[attr-defined]
        try:
            exceptions.append(re.compile(str(x), re.IGNORECASE))
        except re.error:
            continue
    return Provider(name, url, _rules(rules), tuple(exceptions))


def read_catalog() -> dict[str, object]:
    """The catalog's JSON, read from the installed distribution's files (no import of it)."""
    try:
        files = metadata.files(CATALOG_DIST) or []
        [path] = [f for f in files if str(f) == CATALOG_PATH]
        data = json.loads(path.read_text(encoding="utf-8"))
    except (metadata.PackageNotFoundError, ValueError, OSError) as e:
        raise CatalogError(
            f"cannot read the tracking rules ({CATALOG_DIST}: {CATALOG_PATH}): {e}; "
            "reinstall the aggregator's dependencies"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("providers"), dict):
        raise CatalogError(f"{CATALOG_DIST}: {CATALOG_PATH} has no providers")
    return data


@functools.cache
def providers() -> tuple[Provider, ...]:
    """The compiled catalog: global rules and our extra ones first, then the scoped ones."""
    raw: dict[str, dict[str, object]] = read_catalog()["providers"]  # type: ignore[assignment]
    out: list[Provider] = []
    extra = Provider("extra", re.compile(".*"), _rules(list(EXTRA_RULES)), ())
    for name, spec in sorted(raw.items(), key=lambda kv: kv[0] != "globalRules"):
        if spec.get("completeProvider"):
            continue  # a blocked site: nothing to strip, the catalog would drop the link
        p = _compile(name, spec)
        if p is not None and p.params is not None:
            out.append(p)
        if name == "globalRules":
            out.append(extra)
    if extra not in out:
        out.insert(0, extra)
    return tuple(out)


@functools.lru_cache(maxsize=16384)
def strip_tracking(url: str) -> str:
    """`url` without the query parameters the catalog names for it; the rest keep their order.

    Links without a query, and strings that are not URLs, come back unchanged.
    """
    if "?" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.query or not parts.netloc:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    # Exceptions may look at the query too (GitLab's `ref=` names a branch), so the whole URL.
    applying = [p for p in providers() if p.applies(url)]
    kept = [
        (k, v)
        for k, v in pairs
        if not any(p.params is not None and p.params.fullmatch(k) for p in applying)
    ]
    if len(kept) == len(pairs):
        return url
    return urlunsplit(parts._replace(query=urlencode(kept, doseq=True)))


__all__ = ["CatalogError", "Provider", "providers", "read_catalog", "strip_tracking"]
