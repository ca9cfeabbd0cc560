"""The console's, the reports' and the fleet page's message catalogs (`make lint` runs `check`).

    python .ci/i18n_catalogs.py check    every message in the sources is in every catalog,
                                         translated (not fuzzy); no catalog has unused ones
    python .ci/i18n_catalogs.py update   re-extract agent/locale/isoedge.pot and merge it into
                                         each language's .po (new messages come untranslated)

Messages are marked `_("…")` in the JavaScript, `{{ _("…") }}` in the HTML pages, and in Python
`N_("…")`, `_("…")`, `translate(lang, "…")`, `gettext(lang, "…")`, `ngettext(lang, "…", "…", n)`.
English is the message id; the `en` catalog repeats it (so "translated" holds for all four).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "agent" / "locale"
LANGUAGES = ("ru", "kk", "ky", "en")
DOMAIN = "isoedge"
SOURCES = {
    "python": [*sorted((ROOT / "agent").rglob("*.py")), *sorted((ROOT / "central").rglob("*.py"))],
    "javascript": [*sorted((ROOT / "agent" / "console" / "static").glob("*.js")),
                   *sorted((ROOT / "central" / "static").glob("*.js"))],
    "html": [*sorted((ROOT / "agent" / "console" / "static").glob("*.html")),
             *sorted((ROOT / "central" / "static").glob("*.html"))],
}
KEYWORDS: dict[str, Any] = {
    "_": None, "N_": None, "translate": (2,), "gettext": (2,), "ngettext": (2, 3),
    "_fail": None, "_bad_request": None, "tr": None,
}
_HTML_MARK = re.compile(r'\{\{\s*_\("((?:[^"\\]|\\.)*)"\)\s*\}\}')


def extract_html(fileobj: IO[bytes], keywords: Any, comment_tags: Any, *,
                 options: Any) -> Iterator[tuple[int, str, str, list[str]]]:
    """`{{ _("…") }}` marks in an HTML page."""
    del keywords, comment_tags, options  # one fixed mark
    text = fileobj.read().decode("utf-8")
    for match in _HTML_MARK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        yield line, "_", match.group(1).replace('\\"', '"'), []


def template() -> Catalog:
    """Every marked message in the sources."""
    catalog = Catalog(domain=DOMAIN, project="IsoEdge", charset="utf-8")
    methods = {"python": "python", "javascript": "javascript", "html": extract_html}
    for kind, files in SOURCES.items():
        for path in files:
            with path.open("rb") as handle:
                for line, message, comments, _context in extract(
                    methods[kind], handle, keywords=KEYWORDS, comment_tags=("i18n:",),
                    options={"parse_template_string": "true"} if kind == "javascript" else None,
                ):
                    if not message:
                        continue
                    catalog.add(message, None, [(str(path.relative_to(ROOT)), line)],
                                auto_comments=comments)
    return catalog


def load(lang: str) -> Catalog:
    path = LOCALE / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return Catalog(locale=lang, domain=DOMAIN, project="IsoEdge", charset="utf-8")
    with path.open("rb") as handle:
        return read_po(handle, locale=lang, domain=DOMAIN)


def save(catalog: Catalog, path: Path, **options: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        write_po(handle, catalog, width=100, sort_output=True, **options)


def update() -> None:
    pot = template()
    save(pot, LOCALE / f"{DOMAIN}.pot", omit_header=False)
    for lang in LANGUAGES:
        catalog = load(lang)
        catalog.update(pot, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        if lang == "en":
            for message in catalog:
                if message.id and not message.string:
                    message.string = message.id
        save(catalog, LOCALE / lang / "LC_MESSAGES" / f"{DOMAIN}.po")


def check() -> int:
    wanted = {m.id for m in template() if m.id}
    problems: list[str] = []
    for lang in LANGUAGES:
        catalog = load(lang)
        have = {m.id: m for m in catalog if m.id}
        problems += [f"{lang}: missing {mid!r}" for mid in sorted(wanted - have.keys(), key=str)]
        problems += [f"{lang}: unused {mid!r}" for mid in sorted(have.keys() - wanted, key=str)]
        for mid in sorted(wanted & have.keys(), key=str):
            message = have[mid]
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            if message.fuzzy or not all(strings):
                problems.append(f"{lang}: untranslated {mid!r}")
            elif isinstance(mid, str) and set(re.findall(r"\{\w+\}", mid)) != set(
                    re.findall(r"\{\w+\}", str(strings[0]))):
                problems.append(f"{lang}: placeholders differ in {mid!r}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"i18n catalogs: {len(wanted)} messages x {len(LANGUAGES)} languages, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "update":
        update()
        sys.exit(0)
    sys.exit(check())
