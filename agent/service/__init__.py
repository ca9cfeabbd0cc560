"""The running service: configuration, the agent runtime, reload, clock supervision, systemd."""
