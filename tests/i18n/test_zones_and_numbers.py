"""Site time from the tzdata package whatever the OS has; numbers as people type and read them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zoneinfo
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from agent.core.i18n import (
    format_datetime,
    format_number,
    negotiate,
    parse_decimal,
    round_to_resolution,
    zone_offsets,
)
from agent.core.zones import site_zone

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stale_os_tzdata(tmp_path):
    """An operating system whose zone rules predate tzdata 2024a: Almaty still at UTC+6.

    Asia/Dhaka (UTC+6 all through 2025) stands in for the old Asia/Almaty file.
    """
    zones = tmp_path / "zoneinfo"
    (zones / "Asia").mkdir(parents=True)
    dhaka = resources.files("tzdata.zoneinfo").joinpath("Asia", "Dhaka")
    with dhaka.open("rb") as src, (zones / "Asia" / "Almaty").open("wb") as dst:
        shutil.copyfileobj(src, dst)
    zoneinfo.reset_tzpath(to=[str(zones)])
    site_zone.cache_clear()
    try:
        yield
    finally:
        zoneinfo.reset_tzpath()
        site_zone.cache_clear()


def test_almaty_is_utc_plus_5_in_2025_whatever_the_os_tzdata_says(stale_os_tzdata):
    moment = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)
    # The stale system rules really are in force for a plain ZoneInfo...
    os_almaty = zoneinfo.ZoneInfo.no_cache("Asia/Almaty")
    assert moment.astimezone(os_almaty).utcoffset().total_seconds() == 6 * 3600
    # ...and the agent's site zone still says UTC+5 (Kazakhstan since 1 March 2024).
    zone = site_zone("Asia/Almaty")
    assert moment.astimezone(zone).utcoffset().total_seconds() == 5 * 3600
    assert format_datetime(moment, "ru", zone) == "01.07.2025 14:00:00 Asia/Almaty"
    # Before the change Almaty was UTC+6: the package's history is kept.
    assert datetime(2023, 7, 1, tzinfo=UTC).astimezone(zone).utcoffset().total_seconds() == 6 * 3600
    # The page's clock uses the same offsets (from the package, not the browser).
    offsets = zone_offsets(zone)
    switch = datetime(2024, 2, 29, 18, 0, tzinfo=UTC).timestamp()
    assert [o for t, o in offsets if t <= switch][-1] == 5 * 3600
    assert [o for t, o in offsets if t < switch][-1] == 6 * 3600


def test_the_qc_programme_uses_the_package_zone(stale_os_tzdata):
    from agent.qc.programme import QCSection

    section = QCSection.model_validate({"timezone": "Asia/Almaty"})
    assert datetime(2025, 1, 15, 0, 0, tzinfo=UTC).astimezone(section.zone).hour == 5


def test_one_date_time_format_per_language():
    zone = site_zone("Asia/Bishkek")
    moment = datetime(2026, 12, 4, 15, 16, 47, 123456, tzinfo=UTC)
    assert format_datetime(moment, "ru", zone) == "04.12.2026 21:16:47 Asia/Bishkek"
    assert format_datetime(moment, "kk", zone) == "04.12.2026 21:16:47 Asia/Bishkek"
    assert format_datetime(moment, "ky", zone) == "04.12.2026 21:16:47 Asia/Bishkek"
    assert format_datetime(moment, "en", zone) == "2026-12-04 21:16:47 Asia/Bishkek"
    assert format_datetime("2026-12-04T15:16:47.000000Z", "en", None) == "2026-12-04 15:16:47 UTC"


@pytest.mark.parametrize(("typed", "value"), [
    ("370,5", 370.5), ("370.5", 370.5), (" 370,50 ", 370.5), ("1 200,5", 1200.5),
    ("0,25", 0.25), (",5", 0.5), ("370", 370.0), (370, 370.0), ("\u2212 1,5", -1.5),
])
def test_a_decimal_comma_is_a_decimal_sign_never_a_thousands_separator(typed, value):
    assert parse_decimal(typed) == value


@pytest.mark.parametrize("typed", ["3,705.5", "1.200,5", "370,5,1", "", "abc", "nan", "inf", "1e999"])
def test_ambiguous_or_non_numbers_are_refused(typed):
    with pytest.raises(ValueError):
        parse_decimal(typed)


def test_numbers_in_each_language_rounded_to_the_resolution():
    assert format_number(381.33026390330417, "ru", decimals=3) == "381,330"
    assert format_number(381.33026390330417, "en", decimals=3) == "381.330"
    assert format_number(-0.5, "kk", decimals=1) == "\u22120,5"
    assert format_number(0.143727, "ru") == "0,143727"
    assert round_to_resolution(405.0694, 0.001) == 405.069
    assert round_to_resolution(0.143727, 0.01) == 0.14


def test_accept_language_picks_one_of_the_four():
    assert negotiate("ru-RU,ru;q=0.9,en-US;q=0.8") == "ru"
    assert negotiate("de-DE,kk;q=0.5,ru;q=0.4") == "kk"
    assert negotiate("ky-KG") == "ky"
    assert negotiate("de, fr;q=0.8") is None
    assert negotiate("ru;q=0, en") == "en"


def test_every_message_is_translated_in_every_catalog():
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "i18n_catalogs.py"), "check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "0 problems" in done.stdout
