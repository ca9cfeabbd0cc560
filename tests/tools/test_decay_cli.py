"""`isoedge decay`: run() directly and the module entry point in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from helpers import cli_env

from agent.tools import decay_cli as cli
from agent.tools.decay_cli import BadTimeError, parse_time

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output(capsys):
    code, out, _ = _run(
        capsys, "F-18", "1000", "MBq", "--from", "2026-03-01T12:00:00Z", "--to", "+90min", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["activity"] == pytest.approx(1000 * 2 ** (-90 / 109.77))
    assert data["unit"] == "MBq"
    assert data["uncertainty"] == pytest.approx(
        data["activity"] * 0.6931471805599453 * 90 * 0.05 / 109.77**2, rel=1e-6
    )
    assert data["nuclide"] == "F-18"
    assert data["half_life_s"] == pytest.approx(6586.2)
    assert data["from"] == "2026-03-01T12:00:00Z"
    assert data["to"] == "2026-03-01T13:30:00Z"
    assert "Ph. Eur." in data["source"]


def test_text_output_has_value_unit_and_uncertainty(capsys):
    code, out, _ = _run(
        capsys,
        "18F",
        "10",
        "mCi",
        "--from",
        "2026-03-01T12:00Z",
        "--to",
        "-2h",
        "--out-unit",
        "MBq",
    )
    assert code == 0
    first = out.splitlines()[0]
    value, unit, pm, unc = first.split()[:4]
    assert float(value) == pytest.approx(370 * 2 ** (120 / 109.77), rel=1e-4)
    assert unit == "MBq"
    assert pm == "±"
    assert float(unc) > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["Xx-9", "1", "MBq", "--to", "+1h"], "unknown nuclide 'Xx-9'"),
     (["F-18", "1", "furlong", "--to", "+1h"], "unknown activity unit 'furlong'"),
     (["F-18", "1", "MBq", "--to", "tomorrow"], "bad time 'tomorrow'"),
     (["F-18", "lots", "MBq", "--to", "+1h"], "bad activity 'lots'"),
     (["F-18", "nan", "MBq", "--to", "+1h"], "finite"),
     (["F-18", "1", "MBq", "--from", "2026-13-01", "--to", "+1h"], "bad time")],
)  # fmt: skip
def test_bad_input_exits_2_with_a_clear_message(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err


@pytest.mark.parametrize(
    ("text", "delta"),
    [("+90min", timedelta(minutes=90)), ("-2h", timedelta(hours=-2)),
     ("+3d", timedelta(days=3)), ("+1h30min", timedelta(minutes=90)),
     ("-0.5d", timedelta(hours=-12)), ("+45s", timedelta(seconds=45))],
)  # fmt: skip
def test_relative_times(text, delta):
    assert parse_time(text, BASE) == BASE + delta


def test_iso_times_with_offset_and_naive_local():
    assert parse_time("2026-03-01T13:00:00+01:00", BASE) == BASE
    naive = parse_time("2026-03-01T12:00:00", BASE)
    assert naive.tzinfo is not None
    assert naive == datetime(2026, 3, 1, 12, 0).astimezone()
    with pytest.raises(BadTimeError):
        parse_time("90min", BASE)


def test_module_entry_point_in_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "agent.tools.decay_cli", "Cs-137", "100", "uCi",
         "--from", "2016-01-01T00:00Z", "--to", "2026-01-01T00:00Z", "--json"],
        capture_output=True, text=True, env=cli_env(), timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["activity"] == pytest.approx(100 * 2 ** (-(3653 / 365.2422) / 30.1671), rel=1e-9)
    bad = subprocess.run(
        [sys.executable, "-m", "agent.tools.decay_cli", "F-18", "1", "MBq", "--to=-2x"],
        capture_output=True, text=True, env=cli_env(), timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "bad time '-2x'" in bad.stderr
