"""Translations and locale-aware formatting: gettext catalogs read with Babel.

One catalog per language (`agent/locale/<lang>/LC_MESSAGES/isoedge.po`, English message ids)
serves the console's pages, its JavaScript (as JSON), the HTTP API's error texts and the PDF
reports. The catalogs are read from their .po files (compiled in memory on first use), so a
reviewer's corrected .po is all a release needs. Records, streams and logs never pass through
here: data stays in canonical codes; only what a person reads is translated.

`.ci/i18n_catalogs.py check` (run by `make lint`) verifies that every message in the sources is
in every catalog, translated, and that no catalog carries unused messages.
"""

from __future__ import annotations

import functools
import gettext as _gettext
import html
import io
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

_MARK = re.compile(r'\{\{\s*_\("((?:[^"\\]|\\.)*)"\)\s*\}\}')

Language = Literal["ru", "kk", "ky", "en"]
LANGUAGES: tuple[Language, ...] = ("ru", "kk", "ky", "en")
LANGUAGE_NAMES: dict[Language, str] = {
    "ru": "Русский", "kk": "Қазақша", "ky": "Кыргызча", "en": "English",
}
FALLBACK: Language = "en"
DOMAIN = "isoedge"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

# One numeric date format per language (day first where the country writes it so), 24-hour.
_DATE_PATTERNS: dict[Language, str] = {
    "ru": "dd.MM.yyyy", "kk": "dd.MM.yyyy", "ky": "dd.MM.yyyy", "en": "yyyy-MM-dd",
}
TIME_PATTERN = "HH:mm:ss"


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark, translate later"
    """Mark `message` for extraction; it is translated where it is shown."""
    return message


def po_path(lang: str) -> Path:
    """The catalog file of `lang`."""
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.lru_cache(maxsize=8)
def translations(lang: str) -> _gettext.NullTranslations:
    """The compiled catalog of `lang` (English ids pass through for `en` and unknown languages)."""
    if lang not in LANGUAGES:
        return _gettext.NullTranslations()
    from babel.messages.mofile import write_mo  # noqa: PLC0415 - Babel loads on first use
    from babel.messages.pofile import read_po  # noqa: PLC0415

    with po_path(lang).open("rb") as handle:
        catalog = read_po(handle, locale=lang, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return _gettext.GNUTranslations(buffer)


def gettext(lang: str, message: str) -> str:
    """`message` in `lang` (the English id when untranslated)."""
    return translations(lang).gettext(message)


def ngettext(lang: str, singular: str, plural: str, n: int) -> str:
    """The plural form of `lang` for `n`."""
    return translations(lang).ngettext(singular, plural, n)


def translate(lang: str, message: str, **params: Any) -> str:
    """`message` in `lang` with `{name}` placeholders filled in."""
    text = gettext(lang, message)
    return text.format(**params) if params else text


@functools.lru_cache(maxsize=8)
def messages(lang: str) -> dict[str, str]:
    """Every translated message of `lang`, id → text (what the JavaScript reads)."""
    if lang not in LANGUAGES or lang == FALLBACK:
        return {}
    from babel.messages.pofile import read_po  # noqa: PLC0415

    with po_path(lang).open("rb") as handle:
        catalog = read_po(handle, locale=lang, domain=DOMAIN)
    return {
        str(m.id): str(m.string)
        for m in catalog
        if m.id and isinstance(m.id, str) and isinstance(m.string, str) and m.string
    }


def negotiate(header: str | None) -> Language | None:
    """The best of our languages for an `Accept-Language` header (None when none fits)."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                continue
        if tag and quality > 0:
            ranked.append((-quality, index, tag.strip().lower()))
    for _q, _i, tag in sorted(ranked):
        primary = tag.split("-")[0].split("_")[0]
        if primary in LANGUAGES:
            return primary
    return None


def choose(*candidates: str | None) -> Language:
    """The first candidate that is one of our languages, else English."""
    for candidate in candidates:
        if candidate in LANGUAGES:
            return candidate
    return FALLBACK


# ------------------------------------------------------------------- formats
@dataclass(frozen=True, slots=True)
class Formats:
    """How `lang` writes dates, times and numbers (from Babel's locale data)."""

    date: str
    time: str
    decimal: str
    group: str
    minus: str

    def as_dict(self) -> dict[str, str]:
        """For the JavaScript."""
        return {"date": self.date, "time": self.time, "decimal": self.decimal,
                "group": self.group, "minus": self.minus}


@functools.lru_cache(maxsize=8)
def formats(lang: str) -> Formats:
    """The date pattern, time pattern and number symbols of `lang`."""
    from babel import Locale  # noqa: PLC0415
    from babel.numbers import get_decimal_symbol, get_group_symbol  # noqa: PLC0415

    code = lang if lang in LANGUAGES else FALLBACK
    locale = Locale.parse(code)
    group = get_group_symbol(locale)
    return Formats(
        date=_DATE_PATTERNS[code],
        time=TIME_PATTERN,
        decimal=get_decimal_symbol(locale),
        group="\u202f" if group.isspace() else group,  # a narrow no-break space never wraps
        minus="\u2212" if code != "en" else "-",  # the true minus sign outside English
    )


def format_datetime(t: datetime | str | float, lang: str, zone: ZoneInfo | None,
                    *, seconds: bool = True, with_zone: bool = True) -> str:
    """`t` in the site's zone, as `lang` writes it, followed by the zone's name."""
    from babel.dates import format_datetime as babel_format  # noqa: PLC0415

    moment = as_datetime(t)
    fmt = formats(lang)
    pattern = f"{fmt.date} {fmt.time if seconds else 'HH:mm'}"
    text = babel_format(moment, pattern, tzinfo=zone or UTC, locale=choose(lang))
    if not with_zone:
        return text
    return f"{text} {zone_label(zone)}"


def format_date(t: datetime | str | float, lang: str, zone: ZoneInfo | None) -> str:
    """The calendar day of `t` in the site's zone."""
    from babel.dates import format_datetime as babel_format  # noqa: PLC0415

    return babel_format(as_datetime(t), formats(lang).date, tzinfo=zone or UTC, locale=choose(lang))


def zone_label(zone: ZoneInfo | None) -> str:
    """The zone's name as printed beside a time."""
    key = getattr(zone, "key", None) if zone is not None else None
    return "UTC" if key in {None, "UTC", "Etc/UTC"} else str(key)


def as_datetime(t: datetime | str | float) -> datetime:
    """An aware UTC datetime from a datetime, an ISO 8601 text or epoch seconds."""
    if isinstance(t, datetime):
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    if isinstance(t, (int, float)):
        return datetime.fromtimestamp(float(t), UTC)
    value = datetime.fromisoformat(str(t))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_number(value: float | None, lang: str, *, decimals: int | None = None,
                  significant: int = 6) -> str:
    """`value` with `lang`'s decimal sign, to `decimals` places or `significant` digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if decimals is None:
        text = f"{value:.{significant}g}"
        if "e" in text:
            return text.replace(".", formats(lang).decimal)
        decimals = len(text.partition(".")[2]) if "." in text else 0
    from babel.numbers import format_decimal  # noqa: PLC0415

    pattern = "#,##0" + ("." + "0" * decimals if decimals > 0 else "")
    text = format_decimal(round(value, decimals), format=pattern, locale=choose(lang),
                          decimal_quantization=True, group_separator=False)
    fmt = formats(lang)
    return text.replace("-", fmt.minus) if text.startswith("-") else text


def round_to_resolution(value: float, resolution: float | None) -> float:
    """`value` rounded to the instrument's resolution (e.g. 0.001 MBq); unchanged without one."""
    if not resolution or resolution <= 0 or not math.isfinite(value):
        return value
    places = max(0, -math.floor(math.log10(resolution) + 1e-9))
    return round(round(value / resolution) * resolution, places)


_DECIMAL = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?")


def parse_decimal(text: str | float) -> float:
    """A number as a person types it: "370,5" and "370.5" are 370.5 (never 3705).

    Spaces (digit groups) are ignored. A text with both a comma and a point, or more than one
    of either, is ambiguous and refused (ValueError) rather than guessed.
    """
    if isinstance(text, bool):
        raise TypeError("expected a number")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        cleaned = re.sub(r"[\s\u00a0\u202f']", "", str(text)).replace("\u2212", "-")
        if cleaned.count(",") + cleaned.count(".") > 1 or not _DECIMAL.fullmatch(cleaned):
            raise ValueError(f"not a number: {text!r}")
        value = float(cleaned.replace(",", "."))
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


@functools.lru_cache(maxsize=16)
def zone_offsets(zone: ZoneInfo, start_year: int = 1990, end_year: int = 2045) -> tuple[
        tuple[int, int], ...]:
    """The zone's UTC offsets as ((from_epoch_s, offset_s), ...), for the JavaScript's clocks.

    Browsers carry their own copy of the zone rules; the console formats site times with these
    offsets so that the page shows what the agent's tzdata says.
    """
    t = datetime(start_year, 1, 1, tzinfo=UTC)
    end = datetime(end_year, 1, 1, tzinfo=UTC)
    step = timedelta(hours=6)

    def offset(at: datetime) -> int:
        delta = at.astimezone(zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    current = offset(t)
    changes: list[tuple[int, int]] = [(int(t.timestamp()), current)]
    while t < end:
        nxt = t + step
        value = offset(nxt)
        if value != current:
            lo, hi = t, nxt  # the change lies in (lo, hi]: bisect to the second
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if offset(mid) == current:
                    lo = mid
                else:
                    hi = mid
            changes.append((int(hi.timestamp()), value))
            current = value
        t = nxt
    return tuple(changes)


# --------------------------------------------------------------------- pages
@functools.lru_cache(maxsize=4)
def _template(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def render_page(path: Path, lang: Language, zone: ZoneInfo | None) -> str:
    """An HTML page with its `{{ _("…") }}` marks translated into `lang`."""
    text = _template(path)
    options = "".join(
        f'<option value="{code}"{" selected" if code == lang else ""} lang="{code}">'
        f"{html.escape(LANGUAGE_NAMES[code])}</option>"
        for code in LANGUAGES
    )
    text = _MARK.sub(lambda m: html.escape(gettext(lang, m.group(1).replace('\\"', '"'))), text)
    return (text.replace("{{ lang }}", lang).replace("{{ zone }}", html.escape(zone_label(zone)))
            .replace("{{ language_options }}", options))


def catalog_json(lang: Language, zone: ZoneInfo | None) -> dict[str, Any]:
    """What a page's JavaScript formats and translates with (GET /api/i18n)."""
    return {
        "lang": lang,
        "languages": {code: LANGUAGE_NAMES[code] for code in LANGUAGES},
        "messages": messages(lang),
        "formats": formats(lang).as_dict(),
        "zone": {"name": zone_label(zone),
                 "offsets": zone_offsets(zone) if zone is not None else ((0, 0),)},
    }
