"""OPC UA: subscriptions, batch events and security (Basic256Sha256), with asyncua."""

from drivers.opcua.config import OpcUaConfig, OpcUaEvents, OpcUaNode, OpcUaSecurity
from drivers.opcua.driver import OpcUaDriver, quality_of

__all__ = ["OpcUaConfig", "OpcUaDriver", "OpcUaEvents", "OpcUaNode", "OpcUaSecurity", "quality_of"]
