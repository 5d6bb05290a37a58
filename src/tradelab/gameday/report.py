"""A game day's report: report.md and a self-contained report.html with PNG charts.

    write_report(Path("<lab>/state/gamedays/20260101T120000Z-db-outage"))

Drawn from journal.json alone (its "tradelab.series" holds the Prometheus range
queries), so `tradelab gameday report DIR` works when the lab is down. Charts: error
ratio, latency p99 and backlog, each with the fault window shaded and the expected
alert's first firing marked; matplotlib's Agg backend, no display needed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradelab.errors import TradelabError


def read_journal(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "journal.json"
    try:
        journal = json.loads(path.read_text())
    except FileNotFoundError:
        raise TradelabError(f"no journal.json in {directory}: give the directory of a game "
                            "day (under <lab>/state/gamedays/)") from None
    except (OSError, ValueError) as exc:
        raise TradelabError(f"cannot read {path}: {exc}") from None
    if "tradelab" not in journal:
        raise TradelabError(f"{path} is not a tradelab game-day journal (no 'tradelab' key)")
    return journal


def write_report(directory: Path) -> list[Path]:
    """(Re)write report.md, report.html and charts/*.png from DIR/journal.json."""
    directory = Path(directory)
    journal = read_journal(directory)
    charts = draw_charts(journal)
    (directory / "charts").mkdir(exist_ok=True)
    written = []
    for name, png in charts.items():
        path = directory / "charts" / f"{name}.png"
        path.write_bytes(png)
        written.append(path)
    (directory / "report.md").write_text(markdown(journal, charts))
    (directory / "report.html").write_text(html_report(journal, charts))
    return [directory / "report.md", directory / "report.html", *written]


def draw_charts(journal: dict[str, Any]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from tradelab.gameday.runner import CHARTS

    t = journal["tradelab"]
    timeline = t["timeline"]
    out = {}
    for name, (title, unit, _queries) in CHARTS.items():
        fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
        lines = t["series"].get(name, [])
        for line in lines:
            xs = [_dt(v[0]) for v in line["values"]]
            ys = [v[1] for v in line["values"]]
            ax.plot(xs, ys, label=line["legend"], linewidth=1.4)
        if timeline.get("injected_at"):
            end = timeline.get("removed_at") or timeline.get("load_stopped_at")
            if end:
                ax.axvspan(_dt(timeline["injected_at"]), _dt(end), color="tab:red", alpha=0.12,
                           label=f"fault {t['fault']}")
        if timeline.get("detected_at"):
            ax.axvline(_dt(timeline["detected_at"]), color="tab:red", linestyle="--",
                       linewidth=1.2, label=f"{t['expected_alert']} firing")
        if timeline.get("recovered_at"):
            ax.axvline(_dt(timeline["recovered_at"]), color="tab:green", linestyle=":",
                       linewidth=1.2, label="recovered")
        if not lines:
            ax.text(0.5, 0.5, "no data from Prometheus", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(f"{title} — {t['scenario']}")
        ax.set_ylabel(unit)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out[name] = buf.getvalue()
    return out


def summary_rows(journal: dict[str, Any]) -> list[tuple[str, str]]:
    t = journal["tradelab"]
    recon = journal.get("reconciliation") or {}
    return [
        ("scenario", t["scenario"]),
        ("fault", t["fault"]),
        ("expected alert", t["expected_alert"]),
        ("result", "PASSED" if t["ok"] else "FAILED: " + "; ".join(t["failures"])),
        ("time to detect", _seconds(journal.get("time_to_detect_s"))),
        ("time to recover", _seconds(journal.get("time_to_recover_s"))),
        ("steady state before / after",
         f"{_met(journal['steady_state_before']['met'])} / "
         f"{_met(journal['steady_state_after']['met'])}"),
        ("reconciliation", recon.get("summary", "not done")),
        ("reconciled by", recon.get("method", "-")),
        ("rule windows", f"x{t['window_scale']:g} (scrape every "
                         f"{t['scrape_interval_s']:g}s)"),
        ("Chaos Toolkit status", f"{journal.get('status')}"
                                 f"{' (deviated)' if journal.get('deviated') else ''}"),
    ]


def markdown(journal: dict[str, Any], charts: dict[str, bytes]) -> str:
    t = journal["tradelab"]
    lines = [f"# Game day: {t['scenario']}", "", journal.get("experiment", {}).get("title", ""),
             "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(journal)]
    lines += ["", "## Alerts seen", "", "| alert | severity | first seen | resolved |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {a['alertname']}{' (expected)' if a['expected'] else ''} | {a['severity']} "
              f"| {a['first_seen']} | {a['resolved_seen'] or '-'} |"
              for a in journal.get("alerts_seen", [])] or ["| none | | | |"]
    lines += ["", "## Steps", "", "| step | status | start | end |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['activity']['name']} | {r['status']} | {r.get('start', '')} | "
              f"{r.get('end', '')} |" for r in journal.get("run", [])]
    lines += ["", "## Charts", ""]
    lines += [f"![{name}](charts/{name}.png)" for name in charts]
    return "\n".join(lines) + "\n"


def html_report(journal: dict[str, Any], charts: dict[str, bytes]) -> str:
    t = journal["tradelab"]
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
                   for k, v in summary_rows(journal))
    alerts = "".join(
        f"<tr><td>{esc(a['alertname'])}{' (expected)' if a['expected'] else ''}</td>"
        f"<td>{esc(a['severity'])}</td><td>{esc(a['first_seen'])}</td>"
        f"<td>{esc(a['resolved_seen'] or '-')}</td></tr>"
        for a in journal.get("alerts_seen", [])) or "<tr><td colspan=4>none</td></tr>"
    images = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"></figure>' for name, png in charts.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Game day: {esc(t['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.3em .6em;
text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Game day: {esc(t['scenario'])}</h1>
<p>{esc(journal.get('experiment', {}).get('title', ''))}</p>
<table>{rows}</table>
<h2>Alerts seen</h2>
<table><tr><th>alert</th><th>severity</th><th>first seen</th><th>resolved</th></tr>{alerts}
</table>
<h2>Charts</h2>
{images}
</body></html>
"""


def _dt(t: float) -> float:
    """A Unix time as matplotlib's date number (what the DateFormatter reads)."""
    import matplotlib.dates as mdates

    return float(mdates.date2num(datetime.fromtimestamp(t, UTC)))


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:g}s"


def _met(value: bool | None) -> str:
    return {True: "held", False: "did not hold", None: "not checked"}[value]
