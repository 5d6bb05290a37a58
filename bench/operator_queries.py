"""Figure 5: the operator's queries on 1M trades: find-trade, investigate-failures, EXPLAIN.

    python -m bench --only operator

Fills a database with 1M trades (--quick: 2,000) spread over the last 7 days, 2 %
FAILED, 10 % REJECTED, each with its `received` and final event (2M events), then
times tradelab.ops.find_trade (by id and by client order id, random trades) and
investigate_failures (last hour), each call on its own read-only connection as the
CLI makes it, as the operator role. Baseline: connect as the operator and SELECT 1,
the floor any operator command pays. EXPLAIN of every query shows which index it uses.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time

from bench.harness import Figure, Run, percentile

LIMITS = """\
Every query is an index scan on a partial or plain index (trades_pkey, the unique
client_order_id index, trade_events_by_trade, trades_failed_by_time, trades_by_time),
so the time is dominated by the new connection each command opens (authentication,
backend start) and by the round trips: find-trade makes 2 queries, investigate-failures
6 in one REPEATABLE READ snapshot; its window count (trades_in_window) reads the
index over every trade of the window, so it grows with the traffic of that hour."""

SEED_TRADES = """
INSERT INTO trades (client_order_id, symbol, side, quantity, limit_price, status,
                    fill_price, failure_reason, source, request_hash, created_at, updated_at)
SELECT 'op-' || g, (ARRAY['AAPL','MSFT','GOOG','AMZN','TSLA'])[1 + g %% 5],
       CASE WHEN g %% 2 = 0 THEN 'BUY' ELSE 'SELL' END, 1 + g %% 100, NULL,
       CASE WHEN g %% 50 = 0 THEN 'FAILED' WHEN g %% 10 = 1 THEN 'REJECTED' ELSE 'FILLED' END,
       CASE WHEN g %% 50 = 0 OR g %% 10 = 1 THEN NULL ELSE 100 END,
       CASE WHEN g %% 50 = 0 THEN (ARRAY['EXCHANGE_CONNECTION_FAILED: venue down',
                                         'EXCHANGE_TIMEOUT: no answer'])[1 + g %% 2] END,
       'bench', '', now() - g * %s * interval '1 second',
       now() - g * %s * interval '1 second'
FROM generate_series(1, %s) AS g
"""
SEED_EVENTS = """
INSERT INTO trade_events (trade_id, event, status, detail, created_at)
SELECT id, 'received', 'NEW', '{}'::jsonb, created_at FROM trades
UNION ALL
SELECT id, lower(status), status, '{}', created_at + interval '20 milliseconds' FROM trades
"""


def seed(admin_url: str, n: int) -> None:
    import psycopg

    spacing = 7 * 86400 / n  # n trades over the last 7 days
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(SEED_TRADES, (spacing, spacing, n))
        conn.execute(SEED_EVENTS)
        conn.execute("VACUUM ANALYZE trades")
        conn.execute("VACUUM ANALYZE trade_events")


def plan_indexes(conn, sql: str, params) -> str:
    """The scan nodes of EXPLAIN, e.g. 'Index Scan on trades_pkey'."""
    (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    found = []

    def walk(node):
        if "Scan" in node["Node Type"]:
            found.append(f"{node['Node Type']}"
                         + (f" on {node['Index Name']}" if "Index Name" in node else
                            f" of {node.get('Relation Name', '?')}"))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return ", ".join(dict.fromkeys(found))


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def run_figure(run: Run) -> Figure:
    import psycopg

    from tradelab import ops

    n = run.size(1_000_000, 2_000)
    fig = Figure("operator", f"Operator queries on {n:,} trades",
                 goal="index use for every query (EXPLAIN); p50/p99 reported", limits=LIMITS)
    run.database("bench_operator")
    url = run.operator_url("bench_operator")
    started = time.monotonic()
    seed(run.admin_url("bench_operator"), n)
    fig.notes.append(f"filled {n:,} trades and {2 * n:,} events in "
                     f"{time.monotonic() - started:.0f} s")
    rng = random.Random(16)
    calls = run.size(100, 5)

    def floor():
        with psycopg.connect(url) as conn:
            conn.execute("SELECT 1").fetchone()

    results = {
        "connect + SELECT 1 (floor)": timed(floor, calls),
        "find-trade by id": timed(lambda: ops.find_trade(url, trade_id=rng.randint(1, n)),
                                  calls),
        "find-trade by client order id": timed(
            lambda: ops.find_trade(url, client_order_id=f"op-{rng.randint(1, n)}"), calls),
        "investigate-failures, last hour": timed(
            lambda: ops.investigate_failures(url, limit=20, since_s=3600), calls),
    }
    floor_p50 = percentile(results["connect + SELECT 1 (floor)"], 50)
    for what, ms in results.items():
        is_floor = what.endswith("(floor)")
        fig.row(f"{what}, p50", round(percentile(ms, 50), 2), "ms",
                baseline=None if is_floor else round(floor_p50, 2),
                baseline_name=None if is_floor else "connect + SELECT 1",
                note=f"p99 {percentile(ms, 99):.2f} ms over {calls} calls")
    tradelab = shutil.which("tradelab")
    if tradelab:  # the whole command, as the operator types it
        wall = timed(lambda: subprocess.run(
            [tradelab, "find-trade", "--id", str(rng.randint(1, n)), "--json",
             "--database-url", url], capture_output=True, check=True), run.size(10, 2))
        fig.row("`tradelab find-trade --id N --json` wall time, p50",
                round(percentile(wall, 50), 1), "ms", note="Python start, imports, query")
    with psycopg.connect(url) as conn:
        since = conn.execute("SELECT now() - interval '1 hour'").fetchone()[0]
        params = {"since": since, "symbol": None, "limit": 20}
        fig.notes.append("EXPLAIN find-trade by id: "
                         + plan_indexes(conn, ops.FIND_TRADE_SQL["id"], (n // 2,)))
        fig.notes.append("EXPLAIN find-trade by client order id: "
                         + plan_indexes(conn, ops.FIND_TRADE_SQL["client_order_id"],
                                        (f"op-{n // 2}",)))
        fig.notes.append("EXPLAIN the trade's events: "
                         + plan_indexes(conn, ops.TRADE_EVENTS_SQL, (n // 2,)))
        for name, sql in ops.failure_queries(None).items():
            fig.notes.append(f"EXPLAIN investigate-failures {name}: "
                             + plan_indexes(conn, sql, params))
    fig.notes.append("`tradelab verify` over a 1M-order ledger: not measured yet; the verify "
                     "command (issue 16's figure 5, third part) is not on main.")
    return fig
