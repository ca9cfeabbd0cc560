"""MQTT topic names of docs/contract.md §2: built here for the agent, parsed here for consumers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """`{prefix}/{site}/{agent}/...`."""

    prefix: str
    site: str
    agent: str

    @property
    def base(self) -> str:
        """Topic prefix of this agent."""
        return f"{self.prefix}/{self.site}/{self.agent}"

    def readings(self, device: str) -> str:
        """Signed readings of one device."""
        return f"{self.base}/readings/{device}"

    @property
    def alerts(self) -> str:
        """Signed alert events."""
        return f"{self.base}/alerts"

    @property
    def audit(self) -> str:
        """Signed audit-trail events."""
        return f"{self.base}/audit"

    @property
    def replay_request(self) -> str:
        """Plain-JSON `{"from_seq", "to_seq"}` from the central ingest (docs/contract.md §2)."""
        return f"{self.base}/replay/request"

    @property
    def qc(self) -> str:
        """Signed QC test records of dose calibrators (CONTRACT §5)."""
        return f"{self.base}/qc"

    @property
    def status(self) -> str:
        """Retained plain-JSON status; the offline one is the Last Will."""
        return f"{self.base}/status"

    def for_stream(self, stream: str, device: str) -> str:
        """Topic of an envelope of `stream` (device only matters for readings)."""
        if stream == "readings":
            return self.readings(device)
        if stream == "alerts":
            return self.alerts
        if stream == "audit":
            return self.audit
        if stream == "qc":
            return self.qc
        raise ValueError(f"unknown stream {stream!r}")


STREAMS = ("readings", "alerts", "audit", "qc")
_LEAVES = {"alerts", "audit", "qc", "status"}


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A parsed agent topic: whose it is and what it carries.

    `kind` is a stream (`readings`, `alerts`, `audit`, `qc`), `status` or `replay_request`;
    `device` is set for `readings` only.
    """

    site: str
    agent: str
    kind: str
    device: str = ""

    @property
    def stream(self) -> str | None:
        """The envelope stream this topic carries, None for status and replay requests."""
        return self.kind if self.kind in STREAMS else None


def parse_topic(topic: str, prefix: str) -> TopicRef | None:
    """The inverse of `Topics`: None for anything `Topics` never builds under `prefix`."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:  # noqa: PLR2004 - site, agent, rest
        return None
    site, agent, rest = parts
    if rest in _LEAVES:
        return TopicRef(site, agent, rest)
    if rest == "replay/request":
        return TopicRef(site, agent, "replay_request")
    if rest.startswith("readings/") and len(rest) > len("readings/"):
        return TopicRef(site, agent, "readings", rest[len("readings/") :])
    return None
