"""The `isoedge ingest` verbs (docs/contract.md §1, §6).

Imported by the agent's CLI to build its parser, so this module imports nothing heavy; each
verb imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _missing_driver() -> int | None:
    try:
        import psycopg  # noqa: F401, PLC0415
    except ImportError:
        _err("the central ingest needs the PostgreSQL driver: pip install 'isoedge[central]'")
        return EXIT_FAILURE
    return None


def _load(path: str) -> tuple[Any, Any] | int:
    from central.config import ConfigError, load_config  # noqa: PLC0415
    from central.envelope import KeyRegistry, RegistryError  # noqa: PLC0415

    try:
        config = load_config(path)
        registry = KeyRegistry.from_config(config.agents, path)
    except (ConfigError, RegistryError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    return config, registry


def cmd_ingest_run(args: argparse.Namespace) -> int:
    """`isoedge ingest run -c FILE`."""
    if (missing := _missing_driver()) is not None:
        return missing
    import asyncio  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    from agent.core.log import configure_logging  # noqa: PLC0415
    from central.app import Ingest, run_until_signalled  # noqa: PLC0415

    configure_logging(args.log_level)
    loaded = _load(args.config)
    if isinstance(loaded, int):
        return loaded
    config, registry = loaded
    from agent.delivery.signing import KeyFileError, Signer  # noqa: PLC0415

    signer = None
    if config.signing is not None:
        try:
            signer = Signer.load(config.signing.key_file)
        except KeyFileError as exc:
            _err(f"{args.config}: signing.key_file: {exc}")
            return EXIT_USAGE
    try:
        asyncio.run(run_until_signalled(Ingest(config, registry, signer=signer)))
    except (psycopg.Error, OSError, RuntimeError) as exc:
        _err(f"ingest failed: {exc}")
        return EXIT_FAILURE
    return EXIT_OK


def _on_database(args: argparse.Namespace, work: Callable[[Any, Any], _T]) -> _T | int:
    """Run `work(config, registry)` in the frame every verb on the record shares.

    The driver checked, logs on stderr (stdout carries the verb's output, `--json` included),
    the configuration and key registry loaded, a database error named with the file and key.
    """
    if (missing := _missing_driver()) is not None:
        return missing
    import psycopg  # noqa: PLC0415

    from agent.core.log import configure_logging  # noqa: PLC0415

    configure_logging("warning", sys.stderr)
    loaded = _load(args.config)
    if isinstance(loaded, int):
        return loaded
    config, registry = loaded
    try:
        return work(config, registry)
    except psycopg.Error as exc:
        _err(f"{args.config}: database.url: {str(exc).strip()}")
        return EXIT_FAILURE


def _migrated(config: Any, application: str) -> Any:
    """A connection without a statement timeout to a record migrated to this version."""
    from central.schema import migrate  # noqa: PLC0415
    from central.store import connect  # noqa: PLC0415

    conn = connect(config.database.url, application_name=application, statement_timeout_ms=0)
    try:
        migrate(conn, timescaledb=config.database.timescaledb)
    except BaseException:
        conn.close()
        raise
    return conn


def cmd_ingest_report(args: argparse.Namespace) -> int:
    """`isoedge ingest report -c FILE [--json]`."""
    from central.app import ingest_report  # noqa: PLC0415

    result = _on_database(args, ingest_report)
    if isinstance(result, int):
        return result
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return EXIT_OK
    lines = [f"{'agent':<28} {'seq':>17} {'envelopes':>9} {'readings':>10} chain  gaps"]
    for a in result["agents"]:
        seq = f"{a['first_seq']}..{a['last_seq']}" if a["first_seq"] is not None else "-"
        gaps = ", ".join(
            f"{lo}..{hi}" + (" (permanent)" if [lo, hi] in a["permanent_gaps"] else "")
            for lo, hi in a["gaps"]
        ) or "none"
        lines.append(f"{a['site'] + '/' + a['agent']:<28} {seq:>17} {a['envelopes']:>9} "
                     f"{a['readings']:>10} {a['chain']:<6} {gaps}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def cmd_ingest_rebuild(args: argparse.Namespace) -> int:
    """`isoedge ingest rebuild-completeness -c FILE [--check]`."""
    from central.app import rebuild_completeness  # noqa: PLC0415

    diff = _on_database(
        args, lambda config, _registry: rebuild_completeness(config, write=not args.check))
    if isinstance(diff, int):
        return diff
    for line in diff:
        sys.stdout.write(line + "\n")
    if not diff:
        sys.stdout.write("completeness agrees with the record\n")
        return EXIT_OK
    if args.check:
        sys.stdout.write(f"{len(diff)} difference(s); not changed (--check)\n")
        return EXIT_FAILURE
    sys.stdout.write(f"{len(diff)} difference(s); completeness rebuilt from the record\n")
    return EXIT_OK


def cmd_ingest_verify_stored(args: argparse.Namespace) -> int:
    """`isoedge ingest verify-stored -c FILE [--site S --agent A --from SEQ --to SEQ]`."""
    from central.verify_stored import Selection, verify_stored  # noqa: PLC0415

    selection = Selection(args.site, args.agent, args.from_seq, args.to_seq)

    def check(config: Any, registry: Any) -> Any:
        with _migrated(config, "isoedge-verify-stored") as conn:
            return verify_stored(conn, registry, selection)

    found = _on_database(args, check)
    if isinstance(found, int):
        return found
    for line in found.problems:
        sys.stdout.write(line + "\n")
    sys.stdout.write(f"{found.envelopes} envelopes, {found.readings} readings, {found.events}"
                     f" events checked against their signatures: "
                     f"{len(found.problems) or 'no'} problem(s)\n")
    return EXIT_FAILURE if found.problems else EXIT_OK


def cmd_ingest_archive(args: argparse.Namespace) -> int:
    """`isoedge ingest archive -c FILE --before DATE`."""
    from datetime import date  # noqa: PLC0415

    from central.schema import archive_partitions  # noqa: PLC0415

    try:
        before = date.fromisoformat(args.before)
    except ValueError:
        _err(f"--before: expected a date YYYY-MM-DD, got {args.before!r}")
        return EXIT_USAGE

    def archive(config: Any, _registry: Any) -> list[str]:
        with _migrated(config, "isoedge-ingest-archive") as conn:
            return list(archive_partitions(conn, before))

    moved = _on_database(args, archive)
    if isinstance(moved, int):
        return moved
    for name in moved:
        sys.stdout.write(f"detached to {name}\n")
    sys.stdout.write(f"{len(moved)} daily partition(s) before {before} moved to schema archive\n")
    return EXIT_OK


def add_ingest_parser(verbs: Any) -> None:
    """`isoedge ingest run|report|rebuild-completeness|verify-stored|archive`."""
    ingest = verbs.add_parser("ingest", help="the central consumer: verify, store in PostgreSQL")
    sub = ingest.add_subparsers(dest="ingest_verb", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="consume, verify and store until SIGTERM; repair gaps")
    run.add_argument("-c", "--config", required=True, help="ingest configuration (TOML)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_ingest_run)
    report = sub.add_parser("report", help="per agent: seq range, envelopes, gaps, chain")
    report.add_argument("-c", "--config", required=True, help="ingest configuration (TOML)")
    report.add_argument("--json", action="store_true", help="machine-readable (CONTRACT §6)")
    report.set_defaults(func=cmd_ingest_report)
    rebuild = sub.add_parser(
        "rebuild-completeness",
        help="recompute each agent's ranges, chain and counts from the record; show differences")
    rebuild.add_argument("-c", "--config", required=True, help="ingest configuration (TOML)")
    rebuild.add_argument("--check", action="store_true",
                         help="only compare; exit 1 when the maintained state disagrees")
    rebuild.set_defaults(func=cmd_ingest_rebuild)
    check = sub.add_parser(
        "verify-stored",
        help="re-verify stored evidence against the key registry and the stored rows")
    check.add_argument("-c", "--config", required=True, help="ingest configuration (TOML)")
    check.add_argument("--site", help="only this site")
    check.add_argument("--agent", help="only this agent")
    check.add_argument("--from", dest="from_seq", type=int, help="first seq")
    check.add_argument("--to", dest="to_seq", type=int, help="last seq")
    check.set_defaults(func=cmd_ingest_verify_stored)
    archive = sub.add_parser(
        "archive", help="detach the readings' daily partitions before a date into schema archive")
    archive.add_argument("-c", "--config", required=True, help="ingest configuration (TOML)")
    archive.add_argument("--before", required=True, help="YYYY-MM-DD: days before it move")
    archive.set_defaults(func=cmd_ingest_archive)
