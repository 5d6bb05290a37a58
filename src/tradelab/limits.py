"""The lab's promises it cannot keep on a runtime, as `tradelab doctor` notes.

    for check in known_limits(settings, "local", ["postgres", "api"]):  # Check(.., ok=None, ..)
        print(check.check, check.detail)

A note is not a failure: the lab runs, and whoever runs it knows what stays exposed
and what protects it instead. docs/security.md ("Limits that remain") says the same
at length; each note here is one of those limits that applies to these settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradelab.runtimes.base import Check

if TYPE_CHECKING:
    from tradelab.settings import Settings


def known_limits(settings: Settings, runtime: str, names: list[str]) -> list[Check]:
    """The limits of the services `names` with `settings` on `runtime` (docker, local)."""
    notes = []
    if "api" in names:
        notes.append(Check(
            "limit: errors before the app", None,
            "gunicorn itself answers a request line or header it cannot parse (400, 414, "
            "431): an HTML page, not logged nor counted by the app (docs/security.md)"))
    if runtime == "local" and settings.alerting.webhook_url and "alertmanager" in names:
        notes.append(Check(
            "limit: alert webhook URL", None,
            "the local runtime's Alertmanager (Debian's 0.25) has no webhook url_file: the "
            "URL is inline in rendered/local/alertmanager/alertmanager.yml (mode 0600) and "
            "shown by Alertmanager's /api/v2/status to whoever reaches its port"))
    if runtime == "docker" and settings.log_agent in names:
        notes.append(Check(
            f"limit: {settings.log_agent} reads every container's files", None,
            f"{settings.log_agent} tails Docker's log folder as root (no capability, read-only "
            "root): it can read every container's log and config there, other projects' "
            "environment secrets included; leave it out with --without "
            f"{settings.log_agent}"))
    return notes
