"""The alert runbooks (docs/runbooks.md, installed with tradelab) and their links.

    base_url(settings)        # alerting.runbook_base_url, else file://…/tradelab/docs/runbooks.md
    section("TradeProcessingBurnRateHigh")   # that alert's section, as Markdown text
    anchor("TradeProcessingBurnRateHigh")    # "tradeprocessingburnratehigh"

Every alert rule links to base_url#anchor. By default that is the copy of the runbooks
installed with tradelab, which opens offline; a team that keeps its own runbooks sets
alerting.runbook_base_url. `tradelab runbook ALERT` prints a section in the terminal.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from tradelab.errors import TradelabError


def runbooks_file() -> Path:
    # The package's docs/ is the project's docs/ (a link in the source tree, files in a
    # wheel): one copy of the runbooks.
    return Path(str(resources.files("tradelab") / "docs" / "runbooks.md")).resolve()


def base_url(settings) -> str:
    return settings.alerting.runbook_base_url or runbooks_file().as_uri()


def anchor(alertname: str) -> str:
    return alertname.lower()


def sections() -> dict[str, str]:
    """Alert name -> its section (from its `## Name` heading to the next one)."""
    try:
        text = runbooks_file().read_text()
    except OSError as exc:
        raise TradelabError(f"the runbooks are missing from this install ({exc.strerror}: "
                            f"{runbooks_file()}); reinstall tradelab") from None
    parts = re.split(r"^## (\w+)\s*$", text, flags=re.M)
    return {name: f"## {name}\n{body.rstrip()}\n" for name, body in zip(parts[1::2],
                                                                        parts[2::2], strict=True)}


def section(alertname: str) -> str:
    found = sections()
    by_lower = {name.lower(): name for name in found}
    name = by_lower.get(alertname.lower())
    if name is None:
        raise TradelabError(f"no runbook for {alertname!r}: alerts with one are "
                            f"{', '.join(sorted(found))}")
    return found[name]
