"""Local web console for QA officers.

Live readings, alerts, acknowledgement, audit trail, `/healthz` and `/metrics`;
see docs/web-console.md.
"""

from agent.console.app import WebConsole, create_app
from agent.console.auth import hash_password, token_sha256, verify_password

__all__ = ["WebConsole", "create_app", "hash_password", "token_sha256", "verify_password"]
