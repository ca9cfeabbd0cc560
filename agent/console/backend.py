"""What the console may see of and ask from the running agent: a narrow, typed interface.

The console never holds the runtime's `Agent`: it gets a `ConsoleBackend` (the service layer
implements it), reads snapshots from it and asks it for the few things a person may do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from agent.acquisition.state import LiveState
    from agent.delivery.outbox import OutboxStats
    from agent.qc.alerts import Alert


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who the agent is and where it publishes."""

    site: str
    agent_id: str
    version: str
    kid: str
    broker_url: str
    topic_base: str


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One supervised device as the console shows it."""

    id: str
    type: str
    description: str | None
    state: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """The outbox and publisher at one instant (no disk access needed)."""

    link_state: str
    connected: bool
    published_items: int
    published_envelopes: int
    reconnects: int
    quota_state: str
    quota_bytes: int
    writer_alive: bool
    extra: dict[str, Any] = field(default_factory=dict)


class ConsoleBackend(Protocol):
    """The running agent, as far as the console is concerned."""

    @property
    def identity(self) -> AgentIdentity:
        """Site, agent id, key id, broker."""
        ...

    @property
    def live(self) -> LiveState:
        """Latest readings, trends and device health (updated by the pipeline)."""
        ...

    @property
    def started(self) -> bool:
        """True once the agent has finished starting."""
        ...

    @property
    def started_at(self) -> float:
        """Epoch seconds the agent started at."""
        ...

    def devices(self) -> list[DeviceView]:
        """Every supervised device, sorted by id."""
        ...

    def delivery(self) -> DeliveryView:
        """Outbox and broker link state."""
        ...

    async def outbox_stats(self) -> OutboxStats | None:
        """Backlog figures (None while the outbox is not running)."""
        ...

    def open_alerts(self) -> list[Alert]:
        """Alerts needing attention (kept in memory: no disk access)."""
        ...

    def calibrators(self) -> dict[str, dict[str, Any]]:
        """Release state per dose calibrator with a QC programme (CONTRACT §5 `calibrators`)."""
        ...

    async def recent_alerts(self, limit: int) -> list[Alert]:
        """The newest alerts, open or closed."""
        ...

    async def acknowledge_alert(self, alert_id: str, user: str, reason: str) -> Alert:
        """Acknowledge: alert state, audit record and stream events in one transaction."""
        ...

    async def audit_query(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        actor: str | None,
        action: str | None,
        subject: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Audit records matching the filters, oldest first."""
        ...
