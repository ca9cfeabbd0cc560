"""`isoedge report qc|audit|dispensing|batch|release|…`: PDFs from a state directory (CONTRACT §1).

Reads the QC records, the signed records of a kind (agent.records) or the audit trail from
the state database of the state directory (the outbox's SQLite), read-only: safe while the
agent runs (WAL readers). `--state-dir` overrides `agent.state_dir`; given the folder
`isoedge demo --state-dir DIR` uses, its `state/` subfolder is found too.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.core.reading import rfc3339

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
DEFAULT_CONFIG = Path("/etc/isoedge/isoedge.toml")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def parse_bound(text: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """`2026-12-01` → start of that day in `zone` (of the next day when `end`); or an instant."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        stamp = datetime.fromisoformat(text)
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=zone)
    if end:
        day += timedelta(days=1)
    return datetime.combine(day, time(0), zone)


def run_report(args: argparse.Namespace) -> int:  # noqa: C901 - configuration, filters, kind
    """Write the PDF; exit 0, 1 (nothing to read, cannot write) or 2 (usage, configuration)."""
    from agent.service.config import ConfigError, load_config  # noqa: PLC0415

    config = None
    config_path = Path(args.config) if args.config else None
    if config_path is None and args.state_dir is None and DEFAULT_CONFIG.exists():
        config_path = DEFAULT_CONFIG
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            _err(str(exc))
            return EXIT_USAGE
    if config is None and args.state_dir is None:
        _err("isoedge report: give -c FILE or --state-dir DIR")
        return EXIT_USAGE
    zone = config.qc.zone if config is not None else ZoneInfo("UTC")
    lang = getattr(args, "lang", None) or (config.web.language if config is not None else None) \
        or "en"
    site = config.agent.site if config is not None else ""
    base = Path(args.state_dir) if args.state_dir else config.agent.state_dir  # type: ignore[union-attr]
    try:
        since = None if args.date_from is None else parse_bound(args.date_from, zone, end=False)
        until = None if args.date_to is None else parse_bound(args.date_to, zone, end=True)
    except ValueError as exc:
        _err(f"isoedge report: --from/--to: {exc}")
        return EXIT_USAGE
    period = f"{args.date_from or 'start'} to {args.date_to or 'now'}"
    if args.device:
        period += f", device {args.device}"
    db_name = config.outbox.path if config is not None else Path("outbox.db")
    try:
        db_path = _state_db(base, str(db_name))
        if args.kind == "qc":
            pdf, count = _qc(db_path, args.device, since, until, site, zone, period, lang)
        elif args.kind in _RECORD_KINDS or (args.kind == "dispensing" and _signed_doses(db_path)):
            pdf, count = _records(db_path, args, since, until, site, zone, period, lang)
        elif args.kind == "dispensing":
            pdf, count = _dispensing(db_path, args.device, since, until, site, zone, period,
                                     lang)  # fmt: skip
        else:
            pdf, count = _audit(db_path, args.device, since, until, site, zone, period, lang)
    except FileNotFoundError as exc:
        _err(f"isoedge report: {exc}")
        return EXIT_FAILURE
    out = Path(args.out)
    try:
        out.write_bytes(pdf)
    except OSError as exc:
        _err(f"isoedge report: cannot write {out}: {exc.strerror or exc}")
        return EXIT_FAILURE
    sys.stdout.write(f"{out}: {args.kind} report, {count} records, {len(pdf)} bytes\n")
    return EXIT_OK


_RECORD_KINDS = frozenset({"batch", "release", "elution", "shipment", "receipt", "waste"})


def _signed_doses(db_path: Path) -> bool:
    """True when the state database holds signed dispensing records (agent.records).

    Then `report dispensing` prints them (batch, release, patient, label data); a site without
    them keeps the dose-check log of its prescriptions.
    """
    from agent.records.store import read_records  # noqa: PLC0415

    return bool(db_path.exists() and read_records(db_path, kind="dispensing", limit=1))


def _records(  # noqa: PLR0917 - the report's filters
    db_path: Path, args: argparse.Namespace, since: datetime | None, until: datetime | None,
    site: str, zone: ZoneInfo, period: str, lang: str,
) -> tuple[bytes, int]:  # fmt: skip
    """Signed records of one kind (agent.records), oldest first; corrected ones are kept."""
    from agent.records.report import records_report  # noqa: PLC0415
    from agent.records.store import read_records  # noqa: PLC0415

    records = read_records(
        db_path,
        kind=args.kind,
        record_id=getattr(args, "record_id", None),
        subject=getattr(args, "subject", None),
        since=None if since is None else since.astimezone(UTC),
        until=None if until is None else until.astimezone(UTC),
    )
    if args.device:
        records = [r for r in records if args.device in {r.get("device"), r.get("calibrator")}]
    pdf = records_report(records, args.kind, site=site, zone=zone, period=period, lang=lang)
    return pdf, len(records)


def _state_db(base: Path, name: str) -> Path:
    path = base / name
    if not path.exists() and (base / "state" / name).exists():
        return base / "state" / name  # the folder given to `isoedge demo --state-dir`
    if not path.exists():
        raise FileNotFoundError(f"{path}: no state database (has the agent run yet?)")
    return path


def _qc(  # noqa: PLR0917 - the report's filters
    db_path: Path, device: str | None, since: datetime | None, until: datetime | None,
    site: str, zone: ZoneInfo, period: str, lang: str,
) -> tuple[bytes, int]:  # fmt: skip
    from agent.qc.records import read_records  # noqa: PLC0415
    from agent.qc.reports import qc_report  # noqa: PLC0415

    records = read_records(
        db_path,
        device=device,
        since=None if since is None else since.astimezone(UTC),
        until=None if until is None else until.astimezone(UTC),
    )
    return qc_report(records, site=site, zone=zone, period=period, lang=lang), len(records)


def _dispensing(  # noqa: PLR0917 - the report's filters
    db_path: Path, device: str | None, since: datetime | None, until: datetime | None,
    site: str, zone: ZoneInfo, period: str, lang: str,
) -> tuple[bytes, int]:  # fmt: skip
    from agent.qc.reports import dispensing_report  # noqa: PLC0415

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        try:
            rows = db.execute("SELECT body FROM dispensing ORDER BY seq").fetchall()
        except sqlite3.OperationalError as exc:
            raise FileNotFoundError(f"{db_path}: no dispensing records ({exc})") from None
    finally:
        db.close()
    records: list[dict[str, Any]] = []
    for (body,) in rows:
        record = json.loads(body)
        t = datetime.fromisoformat(record["t"])
        if (device and record.get("device") != device) or (since and t < since) \
                or (until and t >= until):  # fmt: skip
            continue
        records.append(record)
    pdf = dispensing_report(records, site=site, zone=zone, period=period, lang=lang)
    return pdf, len(records)


def _audit(  # noqa: PLR0917
    db_path: Path, device: str | None, since: datetime | None, until: datetime | None,
    site: str, zone: ZoneInfo, period: str, lang: str,
) -> tuple[bytes, int]:  # fmt: skip
    from agent.qc.audit import verify_chain  # noqa: PLC0415
    from agent.qc.reports import audit_extract  # noqa: PLC0415

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        clauses, params = [], []
        if since is not None:
            clauses.append("t >= ?")
            params.append(rfc3339(since))
        if until is not None:
            clauses.append("t < ?")
            params.append(rfc3339(until))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        try:
            rows = db.execute(f"SELECT item FROM audit {where} ORDER BY seq", params).fetchall()  # noqa: S608 - fixed columns
            chain_ok = verify_chain(db) is None
        except sqlite3.OperationalError as exc:
            raise FileNotFoundError(f"{db_path}: no audit trail ({exc})") from None
    finally:
        db.close()
    items: list[dict[str, Any]] = [json.loads(r[0]) for r in rows]
    if device:
        items = [
            i for i in items
            if i.get("device") == device or str(i.get("subject", "")).startswith(device)
        ]  # fmt: skip
    reviews = [i for i in items if i.get("event") == "audit.reviewed"]
    pdf = audit_extract(items, site=site, period=period, zone=zone, chain_ok=chain_ok,
                        reviews=reviews, lang=lang)  # fmt: skip
    return pdf, len(items)
