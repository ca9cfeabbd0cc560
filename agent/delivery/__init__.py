"""Delivery: the durable outbox (seq and hash chain), Ed25519 signing and the MQTT publisher."""
