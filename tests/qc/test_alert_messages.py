"""Alert texts, QC summaries and system audit reasons are data: a code and its parameters.

They are stored and streamed as codes (records stay language-neutral) and rendered where they
are shown, in the reader's language and the site's zone (issue 23).
"""

from __future__ import annotations

import re
import sqlite3

import pytest
from statestore import StateStore

from agent.core.i18n import LANGUAGES, gettext
from agent.core.messages import TEMPLATES, Message, msg, render, render_reason
from agent.core.zones import site_zone

CYRILLIC = re.compile(r"[А-Яа-яЁёӘәҒғҚқҢңӨөҰұҮүҺһІі]")


@pytest.fixture
async def store(tmp_path):
    state = await StateStore(tmp_path).open()
    yield state
    await state.close()


async def test_an_alert_is_stored_and_streamed_as_a_code_and_shown_in_each_language(store):
    text = msg("qc.held_dosage", rx="RX-1", device="dosecal-1",
               reason=[Message("{test} overdue since {time}",
                               {"test": "constancy", "time": "2025-07-01T04:00:00Z"})])
    store.alerts.raise_alert("qc.held-calibrator-dosage", "dosecal-1", None, "critical", text,
                             370.5, subject="RX-1")
    await store.settle()
    (item,) = [i for i in store.stream_items("alerts") if i["event"] == "alert.raised"]
    # The stream carries the canonical code and the parameters, no sentence in any language.
    assert item["message"] == "qc.held_dosage"
    assert item["params"]["rx"] == "RX-1"
    assert item["params"]["reason"][0]["params"]["time"] == "2025-07-01T04:00:00Z"
    # So does the state database.
    await store.close()
    with sqlite3.connect(store.path) as db:
        message, params = db.execute("SELECT message, params FROM alerts").fetchone()
    assert message == "qc.held_dosage"
    assert '"rx": "RX-1"' in params
    await store.open()
    (alert,) = store.alerts.open_alerts()
    almaty = site_zone("Asia/Almaty")
    ru = alert.text("ru", almaty)
    # Russian, the hold in the catalog's words, the time in the site's zone (UTC+5) with its name.
    assert "НЕ ДОПУЩЕН" in ru and "RX-1" in ru
    assert "01.07.2025 09:00:00 Asia/Almaty" in ru
    assert "стабильность" in ru
    assert "ON HOLD" in alert.text("en") and "2025-07-01 04:00:00 UTC" in alert.text("en")
    for lang in ("kk", "ky"):
        shown = alert.text(lang, almaty)
        assert CYRILLIC.search(shown) and "ON HOLD" not in shown, shown


def test_numbers_take_the_languages_decimal_sign_and_a_sign_where_it_is_a_deviation():
    text = msg("qc.constancy", result="action", source="CS137-01", nuclide="Cs-137",
               measured=7.012, expected=6.5, deviation=7.88, action=5.0, fail=10.0)
    ru = render(text, "ru", None)
    assert "7,012 МБк" in ru and "+7,88 %" in ru and "требует действий" in ru
    en = render(text, "en", None)
    assert "7.012 MBq" in en and "+7.88 %" in en
    units = render(msg("alert.threshold.above", channel="dose_rate", value=3.2, unit="uSv/h",
                       limit=2.5), "ru", None)
    assert units == "dose_rate 3,2 мкЗв/ч выше 2,5"


def test_a_system_reason_is_rendered_and_a_persons_words_are_kept():
    assert render_reason("Gain drift confirmed", None, "ru", None) == "Gain drift confirmed"
    shown = render_reason("qc.dosage.dispensed", {"result": "pass", "release": "on_hold"},
                          "kk", None)
    assert shown == "сәйкес; калибратор: РҰҚСАТ ЖОҚ"
    # An alert stored before codes (an English sentence) is shown as it was.
    assert render("outbox full: 10 of 10 bytes", "ru", None) == "outbox full: 10 of 10 bytes"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_template_is_in_the_catalog_with_its_placeholders(lang):
    for code, template in TEMPLATES.items():
        translated = gettext(lang, template)
        assert translated, code
        assert set(re.findall(r"\{\w+\}", translated)) == set(re.findall(r"\{\w+\}", template))
        if lang != "en" and re.search(r"[a-z]{4,}", re.sub(r"\{\w+\}", "", template)):
            assert CYRILLIC.search(translated), (lang, code, translated)


def test_unknown_codes_fail_where_they_are_made():
    with pytest.raises(KeyError):
        msg("alert.no-such-code")
