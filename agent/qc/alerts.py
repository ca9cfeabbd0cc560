"""Alerts: raised once, updated, cleared, acknowledged; state in the state DB, events on streams.

An alert is identified by its key (rule, device, channel, subject): while one is active for a
key, raising again does not create another (deduplication). Its life, after ISA-18.2:

    raised (active, unacknowledged) ── acknowledge ──► active, acknowledged
        │ condition gone                                   │ condition gone
        ▼                                                  ▼
    cleared, unacknowledged ── acknowledge ──────────► closed (cleared and acknowledged)

An alert stays "open" (shown to QA) until it is both cleared and acknowledged. Acknowledging
needs the person's name and a reason; it is written to the alert, to the `alerts` stream and
to the audit trail. Every transition is emitted with the old and new state.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import structlog

from agent.core.messages import Message, as_message
from agent.core.reading import dumps_item, event_item, new_id, rfc3339
from agent.qc.audit import AuditLog, Emit
from agent.state.writer import StateWriter

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

log = structlog.get_logger("isoedge.alerts")

Severity = Literal["info", "warning", "alarm", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "alarm": 2, "critical": 3}
SYSTEM_ACTOR = "isoedge"
MAX_SHELVE_MIN = 1440.0  # a shelf lasts at most a day

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id         TEXT PRIMARY KEY,
    rule       TEXT NOT NULL,
    device     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    subject    TEXT NOT NULL,
    severity   TEXT NOT NULL,
    message    TEXT NOT NULL,
    value      REAL,
    active     INTEGER NOT NULL,
    raised_at  TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    cleared_at TEXT,
    ack_by     TEXT,
    ack_at     TEXT,
    ack_reason TEXT,
    details    TEXT NOT NULL,
    params     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (active, ack_at);
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised_at);
-- at most one active alert per key: deduplication holds even across restarts
CREATE UNIQUE INDEX IF NOT EXISTS alerts_active_key
    ON alerts (rule, device, channel, subject) WHERE active = 1;
"""

AlertKey = tuple[str, str, str, str]


class AlertError(ValueError):
    """An acknowledgement that cannot be accepted (missing name or reason, already done)."""


class UnknownAlertError(KeyError):
    """No alert has this id."""

    def __str__(self) -> str:
        return f"no alert with id {self.args[0]!r}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert and its current state."""

    id: str
    rule: str
    device: str | None
    channel: str | None
    subject: str
    severity: str
    message: str
    value: float | None
    active: bool
    raised_at: str
    updated_at: str
    cleared_at: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    ack_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # `message` is a code (agent/core/messages.py); these are its parameters.
    params: dict[str, Any] = field(default_factory=dict)

    def text(self, lang: str = "en", zone: Any = None) -> str:
        """The message as a person reads it in `lang`, times in the site's `zone`."""
        return Message(self.message, self.params).text(lang, zone)

    @property
    def acknowledged(self) -> bool:
        """Someone has acknowledged it."""
        return self.acknowledged_at is not None

    @property
    def is_open(self) -> bool:
        """Still needs attention: active, or cleared but not yet acknowledged."""
        return self.active or not self.acknowledged

    @property
    def state(self) -> str:
        """`active`, `active_acknowledged`, `cleared_unacknowledged` or `closed`."""
        if self.active:
            return "active_acknowledged" if self.acknowledged else "active"
        return "closed" if self.acknowledged else "cleared_unacknowledged"

    @property
    def key(self) -> AlertKey:
        """Deduplication key."""
        return (self.rule, self.device or "", self.channel or "", self.subject)

    def snapshot(self) -> dict[str, Any]:
        """The state fields shown as `old`/`new` in events."""
        return {
            "state": self.state,
            "severity": self.severity,
            "message": self.message,
            "params": self.params,
            "value": self.value,
            "acknowledged_by": self.acknowledged_by,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the web console and API."""
        return {
            "id": self.id,
            "rule": self.rule,
            "device": self.device,
            "channel": self.channel,
            "subject": self.subject or None,
            "severity": self.severity,
            "message": self.message,
            "params": self.params,
            "value": self.value,
            "state": self.state,
            "active": self.active,
            "acknowledged": self.acknowledged,
            "raised_at": self.raised_at,
            "updated_at": self.updated_at,
            "cleared_at": self.cleared_at,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at,
            "ack_reason": self.ack_reason,
            "details": self.details,
        }


def _now() -> datetime:
    return datetime.now(UTC)


class AlertManager:
    """Alert state (a table of the state database, survives restarts) and its events.

    Open alerts are held in memory, so rules and the console read them without the disk; every
    change is written by the state writer together with its `alerts` stream item (and, for an
    acknowledgement, its audit record) in one transaction. `notify(stream, item)` hears of each
    event as it is made (the live view).
    """

    def __init__(
        self,
        store: StateWriter,
        audit: AuditLog,
        *,
        notify: Emit | None = None,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.audit = audit
        self._notify = notify
        self._now = now
        self._active: dict[AlertKey, Alert] = {}
        self._open: dict[str, Alert] = {}
        # Shelved keys (a flapping alarm put aside by a signed decision) -> until, who.
        # Kept in memory: after a restart a shelved alarm is raised again (the safe side).
        self._shelved: dict[AlertKey, tuple[datetime, str]] = {}

    async def open(self) -> None:
        """Create the table if missing and load the open alerts."""

        def _load(db: sqlite3.Connection) -> list[Alert]:
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(alerts)")}
            if "params" not in columns:  # a state database from before message codes
                db.execute("ALTER TABLE alerts ADD COLUMN params TEXT NOT NULL DEFAULT '{}'")
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM alerts "  # noqa: S608 - fixed columns
                "WHERE active = 1 OR ack_at IS NULL"
            ).fetchall()
            return [_from_row(row) for row in rows]

        for alert in await self.store.run(_load):
            self._remember(alert)

    # ------------------------------------------------------------------ for rules
    def active_alert(
        self, rule: str, device: str | None, channel: str | None, subject: str = ""
    ) -> Alert | None:
        """The active alert of this key, if any (cheap: in memory)."""
        return self._active.get((rule, device or "", channel or "", subject))

    def raise_alert(  # noqa: PLR0917 - the alert's identity and content, in reading order
        self,
        rule: str,
        device: str | None,
        channel: str | None,
        severity: str,
        message: Message | str,
        value: float | None = None,
        *,
        subject: str = "",
        details: dict[str, Any] | None = None,
        update: bool = False,
    ) -> Alert:
        """Raise an alert, or update the active one of this key.

        An active alert is updated (stored and emitted as `alert.updated`) when its severity
        changes or when `update=True` (a rule's new result, e.g. the next constancy check);
        otherwise raising again is a no-op: no event per reading.
        """
        if severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {severity!r}")
        text = as_message(message)
        code, params = text.code, text.params
        key = (rule, device or "", channel or "", subject)
        current = self._active.get(key)
        stamp = rfc3339(self._now())
        if current is None and self._is_shelved(key):
            # Shelved: no new alert until the shelf expires (the condition is still evaluated).
            return Alert(id="", rule=rule, device=device, channel=channel, subject=subject,
                         severity=severity, message=code, params=params, value=value,
                         active=False,
                         raised_at=stamp, updated_at=stamp,
                         details={"shelved_until": rfc3339(self._shelved[key][0])})
        if current is None:
            alert = Alert(
                id=new_id(),
                rule=rule,
                device=device,
                channel=channel,
                subject=subject,
                severity=severity,
                message=code,
                params=params,
                value=value,
                active=True,
                raised_at=stamp,
                updated_at=stamp,
                details=details or {},
            )
            self._write(alert, self._event("alert.raised", None, alert, SYSTEM_ACTOR, text),
                        insert=True)
            log.warning("alert raised", rule=rule, device=device, severity=severity, msg=code,
                        params=params)
            return alert
        if current.severity == severity and not update:
            return current
        worse = _worse(severity, current)
        alert = replace(
            current,
            severity=severity,
            message=code,
            params=params,
            value=value,
            updated_at=stamp,
            details=details if details is not None else current.details,
            # A worse condition needs a fresh acknowledgement.
            acknowledged_by=None if worse else current.acknowledged_by,
            acknowledged_at=None if worse else current.acknowledged_at,
            ack_reason=None if worse else current.ack_reason,
        )
        self._write(alert, self._event("alert.updated", current, alert, SYSTEM_ACTOR, text))
        return alert

    def clear_alert(
        self,
        rule: str,
        device: str | None,
        channel: str | None,
        message: Message | str | None = None,
        value: float | None = None,
        *,
        subject: str = "",
    ) -> Alert | None:
        """Clear the active alert of this key (the condition is gone); None if there was none."""
        key = (rule, device or "", channel or "", subject)
        current = self._active.get(key)
        if current is None:
            return None
        stamp = rfc3339(self._now())
        alert = replace(
            current,
            active=False,
            cleared_at=stamp,
            updated_at=stamp,
            value=value if value is not None else current.value,
        )
        why = as_message(message or Message("alert.cleared"))
        self._write(alert, self._event("alert.cleared", current, alert, SYSTEM_ACTOR, why))
        log.info("alert cleared", rule=rule, device=device, msg=why.code, params=why.params)
        return alert

    def _is_shelved(self, key: AlertKey) -> bool:
        shelf = self._shelved.get(key)
        if shelf is None:
            return False
        until, who = shelf
        if self._now() < until:
            return True
        del self._shelved[key]
        self.audit.record("alert.unshelved", SYSTEM_ACTOR, "/".join(filter(None, key)),
                          old={"shelved_until": rfc3339(until), "by": who},
                          reason="shelf expired")  # fmt: skip
        return False

    def shelved(self) -> dict[str, str]:
        """Shelved alarms: "rule/device/channel" -> until (RFC 3339)."""
        now = self._now()
        return {"/".join(filter(None, k)): rfc3339(u) for k, (u, _w) in self._shelved.items()
                if u > now}

    async def shelve(self, alert_id: str, user: str, reason: str, minutes: float) -> Alert:
        """Put a flapping alarm aside for `minutes`: acknowledged now, not raised again until then.

        The acknowledgement and its audit record are one transaction; the shelf itself is audited
        (`alert.shelved`, with its expiry) and ends on its own (`alert.unshelved`).
        """
        if not 0 < minutes <= MAX_SHELVE_MIN:
            raise AlertError(f"shelving lasts 1 to {MAX_SHELVE_MIN:g} minutes")
        current = self._open.get(alert_id) or await self.fetch(alert_id)
        until = self._now() + timedelta(minutes=minutes)
        note = f"shelved until {rfc3339(until)}: {reason}"
        alert = current if current.acknowledged else await self.acknowledge(alert_id, user, note)
        self._shelved[current.key] = (until, user)
        await self.audit.record_durably(
            "alert.shelved", user, f"alert/{alert_id}", new={"shelved_until": rfc3339(until)},
            reason=reason, rule=current.rule, device=current.device,
        )  # fmt: skip
        log.warning("alert shelved", rule=current.rule, device=current.device, user=user,
                    until=rfc3339(until))  # fmt: skip
        return alert

    # ------------------------------------------------------------------ for people
    async def acknowledge(self, alert_id: str, user: str, reason: str) -> Alert:
        """Acknowledge an alert with the person's name and a reason (both required).

        The alert's new state, the audit record and both stream events are one transaction:
        this returns once it is committed, and a crash leaves either all of it or none. The
        live view and the audit listeners are told only after the commit (never of an
        acknowledgement that was not stored).
        """
        user, reason = (user or "").strip(), (reason or "").strip()
        if not user:
            raise AlertError("acknowledging an alert needs the person's name")
        if not reason:
            raise AlertError("acknowledging an alert needs a reason")
        current = self._open.get(alert_id) or await self.fetch(alert_id)
        if current.acknowledged:
            raise AlertError(
                f"alert {alert_id} was already acknowledged by {current.acknowledged_by} "
                f"at {current.acknowledged_at}"
            )
        stamp = rfc3339(self._now())
        alert = replace(
            current, acknowledged_by=user, acknowledged_at=stamp, ack_reason=reason,
            updated_at=stamp,
        )
        record = self.audit.entry(
            "alert.acknowledged",
            actor=user,
            subject=f"alert/{alert.id}",
            old=current.snapshot(),
            new=alert.snapshot(),
            reason=reason,
            rule=alert.rule,
            device=alert.device,
            channel=alert.channel,
            severity=alert.severity,
        )
        event = self._event("alert.acknowledged", current, alert, user, Message(reason))

        def _apply(db: sqlite3.Connection) -> None:
            _update(db, alert)
            AuditLog.insert(db, record)

        done = self.store.transact(
            _apply,
            [("alerts", "", dumps_item(event)), ("audit", "", dumps_item(record))],
            tag="alert.acknowledged",
        )
        # Remembered at once, so a second acknowledgement racing this one is refused; the live
        # view and the audit listeners hear of it only once it is committed.
        self._remember(alert)
        try:
            await asyncio.wrap_future(done)
        except Exception:
            self._remember(current)  # not stored: memory follows the database
            raise
        self._tell("alerts", event)
        self.audit.notify(record)
        return alert

    def get(self, alert_id: str) -> Alert:
        """An open alert by id (in memory); `UnknownAlertError` otherwise."""
        alert = self._open.get(alert_id)
        if alert is None:
            raise UnknownAlertError(alert_id)
        return alert

    async def fetch(self, alert_id: str) -> Alert:
        """Any alert by id, open or closed; `UnknownAlertError` otherwise."""
        row = await self.store.run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE id = ?",  # noqa: S608 - fixed columns
                (alert_id,),
            ).fetchone()
        )
        if row is None:
            raise UnknownAlertError(alert_id)
        return _from_row(row)

    def open_alerts(self) -> list[Alert]:
        """Alerts needing attention (active, or cleared and unacknowledged), worst first."""
        alerts = sorted(self._open.values(), key=lambda a: a.raised_at, reverse=True)
        alerts.sort(key=lambda a: (-SEVERITY_RANK.get(a.severity, 0), not a.active))
        return alerts

    async def all_alerts(self, limit: int = 200) -> list[Alert]:
        """Most recent alerts first, whatever their state."""
        rows = await self.store.run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM alerts ORDER BY raised_at DESC, rowid DESC LIMIT ?",  # noqa: S608
                (max(0, int(limit)),),
            ).fetchall()
        )
        return [_from_row(row) for row in rows]

    # ------------------------------------------------------------------ internals
    def _remember(self, alert: Alert) -> None:
        if alert.active:
            self._active[alert.key] = alert
        elif self._active.get(alert.key) is not None and self._active[alert.key].id == alert.id:
            del self._active[alert.key]
        if alert.is_open:
            self._open[alert.id] = alert
        else:
            self._open.pop(alert.id, None)

    def _write(self, alert: Alert, event: dict[str, Any], *, insert: bool = False) -> None:
        """Queue the alert's row and its event for the next commit; memory changes now."""
        store = _insert if insert else _update
        done = self.store.transact(
            lambda db: store(db, alert), [("alerts", "", dumps_item(event))],
            tag=str(event["event"]),
        )
        done.add_done_callback(_log_failure)
        self._remember(alert)
        self._tell("alerts", event)

    def _tell(self, stream: str, item: dict[str, Any]) -> None:
        if self._notify is not None:
            try:
                self._notify(stream, item)
            except Exception:
                log.exception("alert event not shown live", alert_event=item.get("event"))

    @staticmethod
    def _event(event: str, old: Alert | None, new: Alert, who: str, why: Message,
               ) -> dict[str, Any]:  # fmt: skip
        return event_item(
            event,
            alert_id=new.id,
            rule=new.rule,
            device=new.device,
            channel=new.channel,
            subject=new.subject or None,
            severity=new.severity,
            message=new.message,
            params=new.params,
            value=new.value,
            state=new.state,
            raised_at=new.raised_at,
            details=new.details,
            old=None if old is None else old.snapshot(),
            new=new.snapshot(),
            who=who,
            why=why.code,
            why_params=why.params or None,
        )


def _log_failure(done: Future[Any]) -> None:
    exc = done.exception()
    if exc is not None:
        log.error("alert change not stored", error=repr(exc))


def _insert(db: sqlite3.Connection, alert: Alert) -> None:
    db.execute(
        f"INSERT INTO alerts ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})",  # noqa: S608
        _to_row(alert),
    )


def _update(db: sqlite3.Connection, alert: Alert) -> None:
    assignments = ", ".join(f"{name} = ?" for name in _FIELDS[1:])
    db.execute(
        f"UPDATE alerts SET {assignments} WHERE id = ?",  # noqa: S608 - fixed columns
        (*_to_row(alert)[1:], alert.id),
    )


def _worse(severity: str, current: Alert) -> bool:
    return SEVERITY_RANK[severity] > SEVERITY_RANK[current.severity]


_FIELDS = (
    "id",
    "rule",
    "device",
    "channel",
    "subject",
    "severity",
    "message",
    "value",
    "active",
    "raised_at",
    "updated_at",
    "cleared_at",
    "ack_by",
    "ack_at",
    "ack_reason",
    "details",
    "params",
)
_COLUMNS = ", ".join(_FIELDS)


def _to_row(a: Alert) -> tuple[Any, ...]:
    return (
        a.id,
        a.rule,
        a.device or "",
        a.channel or "",
        a.subject,
        a.severity,
        a.message,
        a.value,
        int(a.active),
        a.raised_at,
        a.updated_at,
        a.cleared_at,
        a.acknowledged_by,
        a.acknowledged_at,
        a.ack_reason,
        json.dumps(a.details, default=str),
        json.dumps(a.params, default=str),
    )


def _from_row(row: tuple[Any, ...]) -> Alert:
    return Alert(
        id=row[0],
        rule=row[1],
        device=row[2] or None,
        channel=row[3] or None,
        subject=row[4],
        severity=row[5],
        message=row[6],
        value=row[7],
        active=bool(row[8]),
        raised_at=row[9],
        updated_at=row[10],
        cleared_at=row[11],
        acknowledged_by=row[12],
        acknowledged_at=row[13],
        ack_reason=row[14],
        details=json.loads(row[15]),
        params=json.loads(row[16]) if row[16] else {},
    )
