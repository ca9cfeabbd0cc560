"""IsoEdge agent: acquisition pipeline, durable outbox, signing and MQTT publishing."""

__version__ = "0.1.0"
