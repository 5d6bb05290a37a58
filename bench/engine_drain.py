"""Figure 2: orders/s of the execution engine draining a backlog, against a row-at-a-time loop.

    python -m bench --only engine

A backlog of NEW orders (100k; --quick: 300) is inserted with one INSERT ... SELECT,
then drained, each variant on a fresh backlog in the same database:
- the real Engine (tradelab.app.engine, in this process, JSON logs to a file as under
  `tradelab serve engine`) with its default settings: batches of 20, the simulated
  exchange's 5-30 ms latency per batch;
- the same Engine with no exchange latency (the cost of the code and the database),
  at the default batch size and at 200;
- the baseline: one order per transaction (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED,
  UPDATE, INSERT event, COMMIT), like the original project's simulator loop.
Each variant stops when the backlog is empty or its time is up.
"""

from __future__ import annotations

import time

from bench.harness import Figure, Run

LIMITS = """\
With its default settings the engine waits for the simulated exchange: each batch
sleeps for the slowest of its orders' latencies (5-30 ms, so ~28 ms for 20 orders),
which caps it near batch_size / 28 ms, about 700 orders/s; and a simulated timeout
(baseline_failure_rate 0.0005, half of them timeouts) holds its whole batch for the
exchange's timeout: with batch 200 one batch in 20 waits that long. That wait is the
simulation, not overhead, but the head-of-line blocking is the design's. Without the
wait the engine runs one transaction per batch (a SELECT ... FOR UPDATE SKIP LOCKED,
an executemany UPDATE and an executemany INSERT of events, one COMMIT), and the
Python per order (exchange model, metrics, one JSON log line) is what is left; a
bigger batch amortises the COMMIT."""

# No simulated exchange wait at all: no latency, and no baseline failures (half of
# which are timeouts that hold their whole batch for the exchange's timeout).
NO_WAIT = {"engine.exchange_latency_ms": [0, 0], "engine.baseline_failure_rate": 0}

SEED = """
INSERT INTO trades (client_order_id, symbol, side, quantity, limit_price, source, request_hash)
SELECT 'bench-' || g, (ARRAY['AAPL','MSFT','GOOG','AMZN'])[1 + g %% 4],
       CASE WHEN g %% 2 = 0 THEN 'BUY' ELSE 'SELL' END, 1 + g %% 50,
       NULL, 'bench', ''
FROM generate_series(1, %s) AS g
"""
PICK_ONE = """
SELECT id, symbol, side, quantity FROM trades WHERE status = 'NEW'
ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
"""
FINISH_ONE = ("UPDATE trades SET status = 'FILLED', fill_price = 100, "
              "updated_at = clock_timestamp() WHERE id = %s")
EVENT_ONE = ("INSERT INTO trade_events (trade_id, event, status, detail) "
             "VALUES (%s, 'filled', 'FILLED', '{}')")


def seed(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE trade_events, trades")
        conn.execute(SEED, (n,))
        conn.execute("ANALYZE trades")


def drain_engine(run: Run, url: str, limit_s: float, **flags) -> tuple[int, float]:
    """Run the real Engine's batches until the backlog is empty or `limit_s` is up."""
    from tradelab.app.engine import Engine
    from tradelab.logs import setup_logging
    from tradelab.settings import load_settings

    settings = load_settings(None, flags={"engine.order_rate": 0, **flags}, env={})
    with open(run.root / "engine.log", "a") as log_file:
        setup_logging("engine", stream=log_file)
        engine = Engine(settings, url)
        done, started = 0, time.monotonic()
        try:
            while time.monotonic() - started < limit_s:
                n = engine.process_batch()
                if not n:
                    break
                done += n
        finally:
            elapsed = time.monotonic() - started
            engine.close()
    return done, elapsed


def drain_row_at_a_time(url: str, limit_s: float) -> tuple[int, float]:
    import psycopg

    done, started = 0, time.monotonic()
    with psycopg.connect(url) as conn:
        while time.monotonic() - started < limit_s:
            with conn.transaction():
                row = conn.execute(PICK_ONE).fetchone()
                if row is None:
                    break
                conn.execute(FINISH_ONE, (row[0],))
                conn.execute(EVENT_ONE, (row[0],))
            done += 1
    return done, time.monotonic() - started


def run_figure(run: Run) -> Figure:
    fig = Figure("engine", "Engine: orders/s draining a backlog",
                 goal="5,000 orders/s or more, or the ratio the profile says is the limit",
                 limits=LIMITS)
    url, admin = run.database("bench_engine"), run.admin_url("bench_engine")
    backlog = run.size(100_000, 300)
    limit_s = run.size(40, 3)
    variants = {
        "row-at-a-time loop, no latency": lambda: drain_row_at_a_time(url, limit_s),
        "engine, batch 20, no exchange wait": lambda: drain_engine(
            run, url, limit_s, **NO_WAIT),
        "engine, batch 200, no exchange wait": lambda: drain_engine(
            run, url, limit_s, **NO_WAIT, **{"engine.batch_size": 200}),
        "engine, default settings (batch 20, 5-30 ms exchange)": lambda: drain_engine(
            run, url, run.size(15, 2)),
    }
    rates = {}
    for name, drain in variants.items():
        seed(admin, backlog)
        done, elapsed = drain()
        rates[name] = done / elapsed
        run.log(f"  engine {name}: {done} orders in {elapsed:.1f} s")
        fig.notes.append(f"{name}: {done:,} of {backlog:,} orders in {elapsed:.1f} s")
    baseline_name = "row-at-a-time loop, no latency"
    for name, rate in rates.items():
        against = name != baseline_name
        fig.row(name, round(rate, 1), "orders/s",
                baseline=round(rates[baseline_name], 1) if against else None,
                baseline_name="row-at-a-time" if against else None)
    # The headline (first row with a ratio) is the engine without the simulated wait.
    fig.rows.sort(key=lambda r: (r.ratio is None, "batch 20, no" not in r.what))
    return fig
