"""Local web console for QA officers.

Live readings, alerts, acknowledgement, audit trail, `/healthz` and `/metrics`;
see docs/web-console.md. The package imports nothing heavy itself: the agent imports the
console's narrow interface (`agent.console.backend`) always, and aiohttp (`agent.console.app`)
only when the console is enabled.
"""
