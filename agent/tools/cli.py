"""The `isoedge` command line (docs/contract.md §1). Exit codes: 0 ok, 1 runtime error, 2 usage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.core.version import __version__

DEFAULT_CONFIG = "/etc/isoedge/isoedge.toml"  # docs/contract.md §4

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and the message on stderr (as argparse does), but testable."""


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------- verbs
def cmd_run(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one exit per failure kind
    """`isoedge run -c FILE`."""
    from agent.core.log import configure_logging  # noqa: PLC0415
    from agent.service.config import ConfigError, load_config  # noqa: PLC0415 - fast --help
    from agent.service.runtime import Agent, StateDirBusyError, run_until_signalled  # noqa: PLC0415

    # State files (the outbox with the audit trail and prescriptions, keys) for this user only,
    # also outside systemd's UMask=.
    os.umask(0o077)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    from agent.delivery.signing import KeyFileError  # noqa: PLC0415
    from agent.state.damage import DamagedDatabaseError  # noqa: PLC0415

    try:
        agent = Agent(config, config_path=Path(args.config))
    except KeyFileError as exc:
        _err(f"{args.config}: signing.key_file: {exc}")
        return EXIT_USAGE
    except DamagedDatabaseError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except (OSError, TypeError) as exc:
        _err(f"{args.config}: signing.key_file: cannot load signing key: {exc}")
        return EXIT_USAGE
    except ValueError as exc:
        _err(f"{args.config}: {exc}")
        return EXIT_USAGE
    try:
        asyncio.run(run_until_signalled(agent))
    except StateDirBusyError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except DamagedDatabaseError as exc:
        _err(str(exc))
        return EXIT_USAGE
    return agent.exit_code


def cmd_check_config(args: argparse.Namespace) -> int:
    """`isoedge check-config FILE`."""
    from agent.service.config import ConfigError, load_config  # noqa: PLC0415

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        if args.json:
            _out(json.dumps({"ok": False, "errors": [p.model_dump() for p in exc.problems]}))
        else:
            _err(f"{args.file}: {len(exc.problems)} error(s)")
            for problem in exc.problems:
                _err(f"  {problem}")
        return EXIT_USAGE
    summary: dict[str, Any] = {
        "ok": True,
        "file": str(args.file),
        "site": config.agent.site,
        "agent": config.agent.id,
        "broker": config.broker.url,
        "topic_prefix": f"{config.broker.topic_prefix}/{config.agent.site}/{config.agent.id}",
        "signing_key": str(config.signing.key_file),
        "replay_trusted_keys": [str(k) for k in config.replay.trusted_keys],
        "state_dir": str(config.agent.state_dir),
        "devices": [
            {
                "id": d.id,
                "type": d.type,
                "enabled": d.enabled,
                "poll_interval_s": d.poll_interval_s,
                "channels": _channels_of(d),
            }
            for d in config.devices
        ],
        "rules": [
            {"name": r.name, "type": r.type, "severity": r.severity, "device": r.device}
            for r in config.rules
        ],
        "qc": {
            "timezone": config.qc.timezone,
            "calibrators": [_qc_summary(c) for c in config.qc.calibrators],
        },
    }
    if args.json:
        _out(json.dumps(summary, indent=2))
        return EXIT_OK
    _out(f"{args.file}: OK")
    _out(f"  agent    {config.agent.site}/{config.agent.id}  (state in {config.agent.state_dir})")
    _out(f"  broker   {config.broker.url}  topics {summary['topic_prefix']}/...")
    _out(f"  signing  {config.signing.key_file}")
    trusted = summary["replay_trusted_keys"]
    _out("  replay   " + (f"answers requests signed by {', '.join(trusted)}" if trusted else
                          "no trusted ingest key: every replay request is refused"))
    _out(f"  devices  {len(config.devices)}")
    for device in summary["devices"]:
        channels = ", ".join(device["channels"]) or "-"
        state = "" if device["enabled"] else "  (disabled)"
        _out(
            f"    {device['id']:<20} {device['type']:<16} every {device['poll_interval_s']}s"
            f"  [{channels}]{state}"
        )
    _out(f"  rules    {len(config.rules)}")
    for rule in summary["rules"]:
        _out(
            f"    {rule['name']:<28} {rule['type']:<20} {rule['severity']:<9}"
            f" {rule['device'] or '(all devices)'}"
        )
    if config.qc.calibrators:
        count, zone = len(config.qc.calibrators), config.qc.timezone
        _out(f"  QC       {count} calibrator(s), time zone {zone}")
        for calibrator in summary["qc"]["calibrators"]:
            _out(
                f"    {calibrator['device']:<20} tests {', '.join(calibrator['tests'])}"
                f"  sources {', '.join(calibrator['sources'])}"
            )
    return EXIT_OK


def _qc_summary(calibrator: Any) -> dict[str, Any]:
    tests = ("constancy", "accuracy", "linearity", "geometry", "background")
    return {
        "device": calibrator.device,
        "sources": [s.id for s in calibrator.sources],
        "tests": [k for k in tests if calibrator.test(k) is not None],
        "daily": calibrator.daily_tests,
    }


def _channels_of(device: Any) -> list[str]:
    for attribute in ("points", "nodes", "channels"):
        values = getattr(device, attribute, None)
        if isinstance(values, list):
            return [
                getattr(v, "channel", None) or getattr(v, "name", None) or str(v) for v in values
            ]
    return []


def cmd_keygen(args: argparse.Namespace) -> int:
    """`isoedge keygen --out DIR`."""
    from agent.delivery.signing import generate_key_files  # noqa: PLC0415

    try:
        signer = generate_key_files(Path(args.out), overwrite=args.force)
    except FileExistsError as exc:
        _err(f"{exc} (use --force to replace it)")
        return EXIT_USAGE
    except OSError as exc:
        _err(f"{args.out}: cannot write keys: {exc.strerror or exc}")
        return EXIT_FAILURE
    if args.json:
        _out(
            json.dumps(
                {
                    "kid": signer.kid,
                    "private_key": str(Path(args.out) / "signing.key"),
                    "public_jwk": str(Path(args.out) / "signing.pub.jwk"),
                }
            )
        )
    else:
        _out(f"key id (kid): {signer.kid}")
        _out(f"private key:  {Path(args.out) / 'signing.key'} (mode 0600; keep it secret)")
        _out(f"public JWK:   {Path(args.out) / 'signing.pub.jwk'} (give this to consumers)")
    return EXIT_OK


def cmd_opcua_cert(args: argparse.Namespace) -> int:
    """`isoedge opcua-cert --device ID --out DIR`: the OPC UA client certificate and key."""
    from drivers.opcua.certs import make_client_certificate  # noqa: PLC0415
    from drivers.opcua.driver import application_uri  # noqa: PLC0415

    uri = args.uri or application_uri(args.device)
    name = f"{args.device}-client"
    out = Path(args.out)
    if not args.force and any((out / f"{name}{ext}").exists() for ext in (".der", ".pem")):
        _err(f"{out / name}.der or .pem exists (use --force to replace it)")
        return EXIT_USAGE
    try:
        cert, key = make_client_certificate(
            out, uri, name=name, days=args.days, hostname=args.hostname
        )
    except OSError as exc:
        _err(f"{out}: cannot write the certificate: {exc.strerror or exc}")
        return EXIT_FAILURE
    _out(f"application URI: {uri}")
    _out(f"certificate:     {cert} (give this to the OPC UA server and trust it there)")
    _out(f"private key:     {key} (mode 0600; keep it secret)")
    _out("in the device's configuration:")
    _out("  [devices.security]")
    _out('  policy = "Basic256Sha256"')
    _out('  mode = "SignAndEncrypt"')
    _out(f'  certificate = "{cert}"')
    _out(f'  private_key = "{key}"')
    return EXIT_OK


def _parse_broker(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
        raise ValueError(f"--broker: expected mqtt://HOST:PORT, got {url!r}")
    return (
        parts.hostname,
        parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        (parts.scheme == "mqtts"),
    )


def cmd_verify(args: argparse.Namespace) -> int:
    """`isoedge verify --broker URL --key JWK`."""
    from agent.delivery.verification import KeyRegistry  # noqa: PLC0415
    from agent.tools.verify import Verifier, subscribe_and_verify  # noqa: PLC0415

    try:
        host, port, tls = _parse_broker(args.broker)
        keys = KeyRegistry.from_files(Path(k) for k in args.key)
    except (ValueError, OSError, KeyError) as exc:
        _err(f"isoedge verify: {exc}")
        return EXIT_USAGE
    verifier = Verifier(keys)
    failed: str | None = None
    try:
        asyncio.run(
            subscribe_and_verify(
                host,
                port,
                args.topic,
                verifier,
                duration=args.duration,
                count=args.count,
                idle=args.idle,
                tls=tls,
                on_subscribed=lambda: _err(
                    f"isoedge verify: subscribed to {args.topic} on {host}:{port}; waiting"
                ),
                on_reconnect=lambda error: _err(
                    f"isoedge verify: connection lost ({error}); reconnecting"
                ),
            )
        )
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # the report of what was verified is printed all the same
        failed = f"isoedge verify: broker {args.broker}: {exc}"
    report = verifier.report(allow_redelivery=args.allow_redelivery)
    _out(json.dumps(report, indent=2))
    if failed is not None:
        _err(failed)
        return EXIT_FAILURE
    return EXIT_OK if report["ok"] else EXIT_FAILURE


def cmd_outbox_status(args: argparse.Namespace) -> int:
    """`isoedge outbox status -c FILE`."""
    from agent.delivery.outbox import read_stats  # noqa: PLC0415
    from agent.service.config import ConfigError, load_config  # noqa: PLC0415

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        stats = read_stats(config.outbox_path)
    except (OSError, FileNotFoundError) as exc:
        _err(str(exc))
        return EXIT_FAILURE
    if args.json:
        _out(json.dumps({"path": str(config.outbox_path), **stats.as_dict()}))
    else:
        _out(f"outbox        {config.outbox_path}")
        _out(
            f"backlog       {stats.items} readings/events in {stats.envelopes} envelopes"
            f" (+{stats.pending_items} not yet batched)"
        )
        _out(f"oldest unsent {stats.oldest_unsent or '-'}")
        _out(
            f"disk used     {stats.disk_bytes / 1e6:.1f} MB of {config.outbox.quota_mb:g} MiB quota"
        )
        _out(f"last seq      {stats.last_seq}")
    return EXIT_OK


def cmd_web_passwd(args: argparse.Namespace) -> int:
    """`isoedge web-passwd`: a password hash (or a bearer token) for `[[web.users]]`."""
    import getpass  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from agent.console.auth import hash_password, token_sha256  # noqa: PLC0415

    if args.token:
        token = secrets.token_urlsafe(32)
        _err("bearer token (give it to the client; it is not stored anywhere):")
        _out(token)
        _err("for the configuration:")
        _out(f'token_sha256 = "{token_sha256(token)}"')
        return EXIT_OK
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                _err("isoedge web-passwd: the passwords differ")
                return EXIT_USAGE
        except (EOFError, KeyboardInterrupt):
            return EXIT_USAGE
    if len(password) < args.min_length:
        _err(f"isoedge web-passwd: password shorter than {args.min_length} characters")
        return EXIT_USAGE
    _out(hash_password(password))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """`isoedge demo`."""
    from agent.tools.demo import run_demo  # noqa: PLC0415

    os.umask(0o077)  # as `isoedge run`: state files for this user only
    return run_demo(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    """`isoedge simulate KIND ...`."""
    runner: Callable[[argparse.Namespace], Any] = args.simulator_run
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner(args))
    return EXIT_OK


# -------------------------------------------------------------------- parser
def build_parser(*, with_simulators: bool = False) -> argparse.ArgumentParser:
    """The whole command line.

    Simulators (and asyncua, pymodbus ...) are imported only for `isoedge simulate`, so the
    agent itself does not carry them in memory.
    """
    parser = _Parser(
        prog="isoedge",
        description="IsoEdge: edge data acquisition for radiopharmacies.",
    )
    parser.add_argument("--version", action="version", version=f"isoedge {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    run = verbs.add_parser("run", help="run the agent in the foreground until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                     help=f"configuration file (TOML; default {DEFAULT_CONFIG})")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    demo = verbs.add_parser("demo", help="simulators + agent + broker + live view, all local")
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    demo.add_argument(
        "--broker", default=None, help="mqtt://HOST:PORT (default: private mosquitto)"
    )
    demo.add_argument("--state-dir", default="./.isoedge-demo", help="keys and outbox")
    demo.add_argument("--web", default="127.0.0.1:8088", help="web console HOST:PORT")
    demo.add_argument(
        "--config", default=None, help="demo configuration (default config/demo.toml)"
    )
    demo.add_argument("--plain", action="store_true", help="log lines instead of the live view")
    demo.add_argument("--fleet", action="store_true",
                      help="three sites' agents, private PostgreSQL, two ingests, fleet page "
                           "(on --web, default 127.0.0.1:8090)")
    demo.set_defaults(func=cmd_demo)

    simulate = verbs.add_parser("simulate", help="run one instrument simulator standalone")
    kinds = simulate.add_subparsers(dest="kind", metavar="KIND", required=True)
    if with_simulators:
        _add_simulators(kinds)

    check = verbs.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.add_argument("--json", action="store_true", help="machine-readable summary")
    check.set_defaults(func=cmd_check_config)

    _add_keys(verbs)

    verify = verbs.add_parser("verify", help="subscribe and verify signed envelopes")
    verify.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    verify.add_argument("--key", required=True, action="append", help="public JWK file (repeat)")
    verify.add_argument("--topic", default="isoedge/v1/#", help="subscription filter")
    verify.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    verify.add_argument("--count", type=int, default=None, help="stop after N envelopes")
    verify.add_argument("--idle", type=float, default=None, help="stop after S quiet seconds")
    verify.add_argument(
        "--allow-redelivery",
        action="store_true",
        help="byte-identical repeats (QoS 1 redelivery) are not failures",
    )
    verify.add_argument("--json", action="store_true", help="(always JSON; accepted for scripts)")
    verify.set_defaults(func=cmd_verify)

    decay = verbs.add_parser("decay", help="decay-correct an activity between two instants")
    _add_decay(decay)

    _add_web_passwd(verbs)

    outbox = verbs.add_parser("outbox", help="inspect the store-and-forward outbox")
    outbox_verbs = outbox.add_subparsers(dest="outbox_verb", metavar="ACTION", required=True)
    status = outbox_verbs.add_parser("status", help="backlog, oldest unsent reading, disk used")
    status.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_outbox_status)
    _add_ingest_and_report(verbs)
    return parser


def _add_ingest_and_report(verbs: Any) -> None:
    _add_ingest(verbs)
    _add_report(verbs)


def _add_ingest(verbs: Any) -> None:
    from central.cli import add_ingest_parser  # noqa: PLC0415 - light; its verbs import lazily

    add_ingest_parser(verbs)


def _add_report(verbs: Any) -> None:
    report = verbs.add_parser(
        "report",
        help="a PDF: dose-calibrator QC records, an audit-trail extract, dispensing records, or "
        "the records of a kind (batch, release, elution, shipment, receipt, waste)"
    )
    report.add_argument("kind", choices=["qc", "audit", "dispensing", *RECORD_REPORTS],
                        help="qc: QC records; audit: trail; dispensing: dispensing records; "
                        "batch, release...: the signed records of that kind")
    report.add_argument("--subject", default=None,
                        help="records about this batch, eluate, shipment or container only")
    report.add_argument("--id", dest="record_id", default=None, help="this record only")
    report.add_argument("-c", "--config", default=None,
                        help=f"configuration file (default {DEFAULT_CONFIG} when it exists)")
    report.add_argument("--state-dir", default=None, help="overrides agent.state_dir")
    report.add_argument("--device", default=None, help="only this device")
    report.add_argument("--from", dest="date_from", default=None,
                        help="first day (YYYY-MM-DD, site time) or an ISO 8601 instant")
    report.add_argument("--to", dest="date_to", default=None,
                        help="last day, inclusive (YYYY-MM-DD) or an ISO 8601 instant")
    report.add_argument("--out", required=True, help="the PDF file to write")
    report.add_argument("--lang", choices=["ru", "kk", "ky", "en"], default=None,
                        help="the report's language (default: web.language, else English)")
    report.set_defaults(func=cmd_report)


RECORD_REPORTS = ("batch", "release", "elution", "shipment", "receipt", "waste")
"""`isoedge report KIND` of the signed records (agent.records); `dispensing` is listed above."""


def cmd_report(args: argparse.Namespace) -> int:
    """`isoedge report qc|audit|dispensing|batch|release|... ...`."""
    from agent.tools.report_cli import run_report  # noqa: PLC0415 - reportlab loads only here

    return run_report(args)


def _add_keys(verbs: Any) -> None:
    """`keygen` (the signing key) and `opcua-cert` (an OPC UA client certificate)."""
    keygen = verbs.add_parser("keygen", help="create an Ed25519 signing key and its public JWK")
    keygen.add_argument("--out", required=True, help="directory for signing.key / signing.pub.jwk")
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    keygen.add_argument("--json", action="store_true")
    keygen.set_defaults(func=cmd_keygen)
    _add_opcua_cert(verbs)


def _add_opcua_cert(verbs: Any) -> None:
    opcua_cert = verbs.add_parser(
        "opcua-cert", help="make the agent's OPC UA client certificate and key for a device"
    )
    opcua_cert.add_argument("--device", required=True, help="the OPC UA device's id")
    opcua_cert.add_argument("--out", required=True, help="directory for <device>-client.der/.pem")
    opcua_cert.add_argument(
        "--uri", default=None, help="application URI (default: urn:isoedge:agent:<device>)"
    )
    opcua_cert.add_argument("--hostname", default=None, help="host name in the certificate")
    opcua_cert.add_argument("--days", type=int, default=730, help="validity (default 730)")
    opcua_cert.add_argument("--force", action="store_true", help="replace existing files")
    opcua_cert.set_defaults(func=cmd_opcua_cert)


def _add_web_passwd(verbs: Any) -> None:
    passwd = verbs.add_parser(
        "web-passwd", aliases=["passwd"],
        help="hash a web console password (or make a bearer token) for the config",
    )
    passwd.add_argument("--stdin", action="store_true", help="read the password from stdin")
    passwd.add_argument("--token", action="store_true",
                        help="generate a bearer token and print its token_sha256 instead")
    passwd.add_argument("--min-length", type=int, default=10, help="refuse shorter passwords")
    passwd.set_defaults(func=cmd_web_passwd)


def _add_simulators(kinds: Any) -> None:
    from simulators import SIMULATOR_MODULES  # noqa: PLC0415

    for kind, module_name in sorted(SIMULATOR_MODULES.items()):
        module = importlib.import_module(module_name)
        sub = kinds.add_parser(kind, help=(module.__doc__ or kind).strip().splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(func=cmd_simulate, simulator_run=module.run)


def _add_decay(parser: argparse.ArgumentParser) -> None:
    try:
        decay_cli = importlib.import_module("agent.tools.decay_cli")
    except ModuleNotFoundError:  # until the decay verb lands
        return
    decay_cli.add_arguments(parser)
    parser.set_defaults(func=decay_cli.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `isoedge` console script."""
    if argv is None:
        # `isoedge ... | head` should end quietly, as other command-line tools do.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] == "decay":
        from agent.tools.decay_cli import join_negative_offsets  # noqa: PLC0415

        words = ["decay", *join_negative_offsets(words[1:])]
    parser = build_parser(with_simulators=bool(words) and words[0] == "simulate")
    args = parser.parse_args(words)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return int(result)


if __name__ == "__main__":
    raise SystemExit(main())
