"""Tests use the same private-broker launcher as `isoedge demo`."""

from agent.mosquitto import Mosquitto, mosquitto_binary

__all__ = ["Mosquitto", "mosquitto_binary"]
