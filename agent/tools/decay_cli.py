"""`isoedge decay NUCLIDE ACTIVITY UNIT --from T0 --to T1 [--json]`.

Times are ISO 8601 (`2026-11-22T12:00Z`, `2026-11-22 13:00+01:00`; a time without an offset is
local time) or relative: `+90min`, `-2h`, `+1h30min`, `+3d`, `now`. `--from` is relative to
now, `--to` to `--from`. Units: s, min, h, d, w, y (y = 365.2422 d, the ICRP-107 year).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from agent.physics.correction import ACTIVITY_UNITS, DecayResult, UnknownUnitError, correct
from agent.physics.nuclides import DAY, HOUR, MINUTE, YEAR, NuclideTable, UnknownNuclideError

_UNIT_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "min": MINUTE,
    "h": HOUR,
    "d": DAY,
    "w": 7 * DAY,
    "y": YEAR,
}
_REL_PART = r"(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|min|h|d|w|y)"
_RELATIVE = re.compile(rf"^\s*([+-])\s*((?:{_REL_PART}\s*)+)$")
_PART = re.compile(_REL_PART)
_NEGATIVE_VALUE = re.compile(rf"^-(\d+|\d*\.\d+)$|^-\s*(?:{_REL_PART}\s*)+$")


class BadTimeError(ValueError):
    """A time that is neither ISO 8601 nor a relative offset."""


def parse_time(text: str, base: datetime) -> datetime:
    """An aware datetime from ISO 8601, `now`, or an offset such as `+90min` from `base`."""
    stripped = text.strip()
    if stripped.lower() == "now":
        return datetime.now(UTC)
    match = _RELATIVE.match(stripped)
    if match:
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(match.group(2))
        )
        return base + timedelta(seconds=-seconds if match.group(1) == "-" else seconds)
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise BadTimeError(
            f"bad time {text!r}: expected ISO 8601 (2026-11-22T12:00:00Z) or an offset "
            "like +90min, -2h, +3d, +1h30min"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()  # naive: local time


TIME_OPTIONS = ("--from", "--to")


def join_negative_offsets(words: Sequence[str]) -> list[str]:
    """`--to -2h` as `--to=-2h`: argparse takes a value starting with `-` for an option.

    Only a word that is a negative offset or number and follows `--from`/`--to` is joined;
    every other word is left for argparse to judge.
    """
    out: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        following = words[index + 1] if index + 1 < len(words) else None
        if word in TIME_OPTIONS and following is not None and _NEGATIVE_VALUE.match(following):
            out.append(f"{word}={following}")
            index += 2
            continue
        out.append(word)
        index += 1
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the `decay` verb."""
    parser.description = "Decay-correct an activity between two instants."
    parser.add_argument("nuclide", help="e.g. F-18, Tc-99m, 18F, Cs137")
    parser.add_argument("activity", help="activity at --from (a number)")
    parser.add_argument("unit", help=f"activity unit: {', '.join(ACTIVITY_UNITS)} (or µCi)")
    parser.add_argument(
        "--from",
        dest="t_from",
        default="now",
        metavar="T0",
        help="when ACTIVITY was measured: ISO 8601 or offset from now (default: now)",
    )
    parser.add_argument(
        "--to",
        dest="t_to",
        required=True,
        metavar="T1",
        help="reference time: ISO 8601 or offset from --from, e.g. +90min, -2h, +3d",
    )
    parser.add_argument("--out-unit", default=None, help="unit of the result (default: UNIT)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _sig(value: float, digits: int) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _duration_unit(seconds: float) -> tuple[float, str]:
    for scale, name in ((YEAR, "y"), (DAY, "d"), (HOUR, "h"), (MINUTE, "min")):
        if seconds >= 2 * scale:
            return scale, name
    return 1.0, "s"


def format_result(result: DecayResult) -> str:
    """Human-readable lines: value ± uncertainty, then what it rests on."""
    if result.uncertainty is None:
        unc = "(uncertainty n/a: no evaluated half-life uncertainty in the table)"
        value = _sig(result.activity, 6)
    else:
        u = _sig(result.uncertainty, 2)
        decimals = len(u.split(".")[1]) if "." in u else 0
        value = (
            f"{result.activity:.{decimals}f}"
            if result.uncertainty > 0
            else _sig(result.activity, 6)
        )
        unc = f"± {u} {result.unit} (standard uncertainty, k=1)"
    scale, name = _duration_unit(result.half_life_s)
    half_life = f"{_sig(result.half_life_s / scale, 6)} {name}"
    if result.half_life_uncertainty_s is not None:
        half_life += f" ± {_sig(result.half_life_uncertainty_s / scale, 2)} {name}"
    elapsed = result.elapsed_s
    e_scale, e_name = _duration_unit(abs(elapsed))
    return (
        f"{value} {result.unit} {unc}\n"
        f"{result.nuclide}: T½ {half_life} [{result.source}]; "
        f"from {result.t_from.astimezone(UTC).isoformat()} to "
        f"{result.t_to.astimezone(UTC).isoformat()} (Δt {elapsed / e_scale:+.6g} {e_name})"
    )


def run(args: argparse.Namespace, table: NuclideTable | None = None) -> int:
    """Run the verb; 0 on success, 2 with a message on stderr for bad input."""
    try:
        try:
            activity = float(args.activity)
        except ValueError:
            raise ValueError(f"bad activity {args.activity!r}: expected a number") from None
        t_from = parse_time(args.t_from, datetime.now(UTC))
        t_to = parse_time(args.t_to, t_from)
        result = correct(
            table or NuclideTable(), args.nuclide, activity, args.unit, t_from, t_to, args.out_unit
        )
    except (UnknownNuclideError, UnknownUnitError, ValueError) as exc:
        sys.stderr.write(f"isoedge decay: error: {exc}\n")
        return 2
    except OverflowError:
        sys.stderr.write("isoedge decay: error: time out of range\n")
        return 2
    if not math.isfinite(result.activity):
        sys.stderr.write("isoedge decay: error: result out of range (interval too long)\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        sys.stdout.write(format_result(result) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: `python -m agent.tools.decay_cli F-18 1000 MBq --to +90min`."""
    parser = argparse.ArgumentParser(prog="isoedge decay")
    add_arguments(parser)
    return run(parser.parse_args(join_negative_offsets(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
