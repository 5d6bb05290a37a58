"""docs/benchmarks.md from a run's figures: summary table, one section per figure.

    text = render(figures, machine_facts(), kept=kept_part(old_text))

Everything above KEEP_MARK is generated; what follows it (the profiles and the
proposals, written by hand) is carried over from the previous file unchanged.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from bench.harness import Figure, load_average

KEEP_MARK = "<!-- Everything below this line is written by hand; `python -m bench` keeps it. -->"


def machine_facts() -> dict[str, str]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": f"{os.cpu_count()} x {model}", "memory": memory,
            "os": f"{platform.system()} {platform.release()}",
            "python": sys.version.split()[0], "load_before": load_average()}


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _summary(fig: Figure) -> tuple[str, str, str, str]:
    if fig.failed or fig.skipped:
        return ("failed: " if fig.failed else "skipped: ") + (fig.failed or fig.skipped), "", "", ""
    headline = next((r for r in fig.rows if r.ratio is not None), fig.rows[0] if fig.rows else None)
    if headline is None:
        return "", "", "", ""
    return (f"{headline.what}: {_num(headline.value)} {headline.unit}",
            f"{headline.baseline_name or ''} {_num(headline.baseline)}".strip(),
            f"{headline.ratio:.2f}x" if headline.ratio is not None else "", fig.goal)


def render(figures: list[Figure], facts: dict[str, str], kept: str = "",
           quick: bool = False) -> str:
    out = ["# Benchmarks", "",
           f"Written by `python -m bench{' --quick' if quick else ''}` on {facts['date']}. "
           "Each figure is measured against a baseline in the same run, in interleaved "
           "rounds where noise matters: compare the ratios between runs and machines, "
           "not the absolute numbers. No test asserts any of these; "
           "tests/test_bench.py only checks that the suite runs (`--quick`).", "",
           f"Machine: {facts['cpu']}, {facts['memory']}, {facts['os']}, Python "
           f"{facts['python']}. Load average (1/5/15 min) {facts['load_before']} at the "
           f"start, {facts.get('load_after', '?')} at the end: the machine is shared with "
           "other engineers' jobs, which is why only same-run ratios mean anything.", "",
           "## Summary", "",
           "| # | figure | measured | baseline | ratio | goal |",
           "| --- | --- | --- | --- | --- | --- |"]
    for n, fig in enumerate(figures, 1):
        measured, baseline, ratio, goal = _summary(fig)
        out.append(f"| {n} | [{fig.title}](#{n}-{fig.name}) | {measured} | {baseline} | "
                   f"{ratio} | {goal} |")
    for n, fig in enumerate(figures, 1):
        out += ["", f"<a id=\"{n}-{fig.name}\"></a>", f"## {n}. {fig.title}", ""]
        if fig.failed or fig.skipped:
            out += [("**Failed**: " if fig.failed else "**Skipped**: ")
                    + (fig.failed or fig.skipped), ""]
        if fig.rows:
            out += ["| what | value | baseline | ratio | note |",
                    "| --- | --- | --- | --- | --- |"]
            for r in fig.rows:
                base = f"{_num(r.baseline)} ({r.baseline_name})" if r.baseline_name else \
                    _num(r.baseline)
                ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
                out.append(f"| {r.what} | {_num(r.value)} {r.unit} | {base} | {ratio} | "
                           f"{r.note} |")
            out.append("")
        out += [f"- {note}" for note in fig.notes]
        if fig.notes:
            out.append("")
        if fig.goal:
            out += [f"Goal: {fig.goal}.", ""]
        if fig.limits:
            out += ["What limits it: " + " ".join(fig.limits.split()), ""]
        out.append(f"(measured in {fig.seconds:.0f} s)")
    out += ["", KEEP_MARK, kept.strip("\n"), ""]
    return "\n".join(out)


def kept_part(old_text: str) -> str:
    """The hand-written tail of an earlier docs/benchmarks.md ('' when there is none)."""
    _, mark, tail = old_text.partition(KEEP_MARK)
    return tail if mark else ""
