"""Tests use the same private-broker launcher as `isoedge demo`."""

from agent.tools.mosquitto import Mosquitto, mosquitto_binary

__all__ = ["Mosquitto", "mosquitto_binary"]
