"""The benchmark suite: every figure against a same-run baseline; rewrites docs/benchmarks.md.

    python -m bench                      # all eight figures (~15 min), docs/benchmarks.md
    python -m bench --only api,engine    # some figures; Markdown to stdout unless --out
    python -m bench --quick --out /tmp/b.md --json   # tiny sizes: the CI smoke run

A full run rewrites docs/benchmarks.md (the hand-written part after its keep-mark
stays). A partial or --quick run never touches it unless --out says so. Progress
goes to stderr; --json prints every figure as JSON on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
import traceback
from pathlib import Path

from bench.harness import BenchError, Figure, Run, load_average
from bench.report import kept_part, machine_facts, render

# name -> module; the order is the order of the figures and of the document.
FIGURES = {
    "api": "bench.api_throughput",
    "engine": "bench.engine_drain",
    "load": "bench.load_vs_wrk",
    "metrics": "bench.metrics_scrape",
    "operator": "bench.operator_queries",
    "cli": "bench.cli_start",
    "lab": "bench.lab_up",
    "gameday": "bench.gameday",
}
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(FIGURES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise SystemExit(f"error: unknown figure {', '.join(unknown)}; "
                         f"choose from {', '.join(FIGURES)}")
    return [n for n in FIGURES if n in names]


def run_one(run: Run, name: str) -> Figure:
    started = time.monotonic()
    run.log(f"[bench] {name} ...")
    try:
        fig = importlib.import_module(FIGURES[name]).run_figure(run)
    except (BenchError, Exception) as exc:  # noqa: BLE001 - one broken figure, not the suite
        if not isinstance(exc, BenchError):
            run.log(traceback.format_exc())
        fig = Figure(name, name, failed=f"{type(exc).__name__}: {exc}".splitlines()[0])
    fig.seconds = time.monotonic() - started
    run.log(f"[bench] {name}: {fig.failed or fig.skipped or 'done'} ({fig.seconds:.0f} s)")
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated figures: {', '.join(FIGURES)}")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one short round: proves the suite runs")
    parser.add_argument("--out", type=Path, help="Markdown file to write "
                        "(default: docs/benchmarks.md for a full run, else stdout)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    names = parse_only(args.only)
    out = args.out or (DOC if names == list(FIGURES) and not args.quick else None)

    facts = machine_facts()
    # SIGTERM (a background run stopped with kill) stops the run's servers and database.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    run = Run(quick=args.quick)
    try:
        figures = [run_one(run, name) for name in names]
    finally:
        run.close()
    facts["load_after"] = load_average()
    old = out.read_text() if out is not None and out.exists() else ""
    text = render(figures, facts, kept=kept_part(old), quick=args.quick)
    if out is not None:
        out.write_text(text)
        run.log(f"[bench] wrote {out}")
    if args.json:
        print(json.dumps({"machine": facts, "quick": args.quick,
                          "figures": [f.as_dict() for f in figures]}, indent=2))
    elif out is None:
        print(text)
    return 1 if any(f.failed for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
