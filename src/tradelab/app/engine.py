"""The execution engine: runs NEW trades against the simulated exchange, plus an order flow.

    tradelab serve engine --metrics-bind 127.0.0.1:9101     # main(settings, lab, bind)

    engine = Engine(settings, database_url)                  # in-process, e.g. in tests
    engine.process_batch()                                   # one transaction, <= batch_size
    engine.run(stop_event)                                   # until stop_event is set

Each batch locks the oldest NEW trades with FOR UPDATE SKIP LOCKED, so any number
of engines share one backlog and never execute a trade twice. A trade's new status
and its trade_events row commit together: a crash mid-batch leaves the trades NEW
for the next pick-up, never half-done. The database may vanish at any moment; the
engine says so (event db_unavailable, tradelab_db_up 0), backs off and carries on
when it returns. Chaos faults are read from the chaos file on every loop.

Each order goes through, in this order: a trading halt (orders of a halted symbol
are not picked up: they stay NEW until `ops resume`), the routing table (live
levers, then settings), the market data of its venue (a price older than
trading.max_price_age_s: REJECTED STALE_MARKET_DATA; rejected rather than held,
because a held order would fill later at a price the client never saw), pre-trade
risk (tradelab.app.risk: REJECTED with the limit's reason), and only then the venue.
Fills update the `positions` table in the same transaction; the rows of the batch's
symbols are locked first, so engines running side by side see each other's fills.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tradelab import __version__
from tradelab.app import risk
from tradelab.app.exchange import Order, Outcome
from tradelab.app.venues import Venues
from tradelab.audit import AUDIT_FILE, AuditCollector
from tradelab.chaos_state import ChaosCollector, ChaosReader, chaos_file_from_env
from tradelab.db.watchdog import Watchdog
from tradelab.errors import TradelabError
from tradelab.host import parse_bind
from tradelab.levers_state import ALL, LEVERS_FILE, LeverReader
from tradelab.trade_invariants import fill_problem

log = logging.getLogger("tradelab.engine")

STATUSES = ("FILLED", "REJECTED", "FAILED")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GAUGE_REFRESH_S = 1.0
MAX_BACKOFF_S = 5.0
# Bounds on the engine's database work (db/connect.bounded_session): a statement, a lock
# wait, a session gone quiet inside a transaction (it holds FOR UPDATE row locks), and
# the whole of one unit of work, which the watchdog ends from the client side when the
# server cannot (a paused or partitioned server never runs out its statement_timeout).
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 2000
IDLE_IN_TRANSACTION_MS = 30_000
DB_WORK_LIMIT_S = 15.0
FLOW_MAX_PER_TICK = 50  # after a pause, resume the flow instead of flooding the backlog

# Requeued orders (`tradelab ops requeue`) first, then the oldest; halted symbols wait.
_PICK = """
SELECT id, client_order_id, symbol, side, quantity, limit_price
FROM trades WHERE status = 'NEW' AND NOT (symbol = ANY(%s))
ORDER BY requeued_at NULLS LAST, created_at, id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
_FINISH = """
UPDATE trades SET status = %s, fill_price = %s, failure_reason = %s, venue = %s,
                  updated_at = clock_timestamp()
WHERE id = %s AND status = 'NEW'
"""
_LOCK_POSITIONS = """
SELECT symbol, net_quantity FROM positions WHERE symbol = ANY(%s)
ORDER BY symbol, venue FOR UPDATE
"""
_ADD_FILL = """
INSERT INTO positions (symbol, venue, net_quantity, net_notional, fills, updated_at)
VALUES (%s, %s, %s, %s, 1, clock_timestamp())
ON CONFLICT (symbol, venue) DO UPDATE SET
    net_quantity = positions.net_quantity + EXCLUDED.net_quantity,
    net_notional = positions.net_notional + EXCLUDED.net_notional,
    fills = positions.fills + 1, updated_at = EXCLUDED.updated_at
"""
_POSITIONS = "SELECT symbol, venue, net_quantity, net_notional FROM positions"
# clock_timestamp(), not now(): now() is when the batch's transaction began, before the
# exchange answered, and the timeline find-trade prints should show when the fill happened.
_EVENT = """
INSERT INTO trade_events (trade_id, event, status, detail, created_at)
VALUES (%s, %s, %s, %s, clock_timestamp())
"""
_BACKLOG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
FROM trades WHERE status = 'NEW'
"""
_EVENT_NAME = {"FILLED": "filled", "REJECTED": "rejected", "FAILED": "failed"}


class EngineMetrics:
    """The engine's own registry, with every label value present from the start."""

    def __init__(self, chaos: ChaosReader | None = None,
                 memory_limit_bytes: int | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from tradelab.app.process_metrics import ProcessTreeCollector

        self.registry = r = CollectorRegistry()
        r.register(ProcessTreeCollector(memory_limit_bytes=memory_limit_bytes))
        self.orders_received = Counter("tradelab_orders_received", "Orders taken in, by source",
                                       ["source"], registry=r)
        self.processed = Counter("tradelab_trades_processed",
                                 "Trades executed, by final status", ["status"], registry=r)
        self.duration = Histogram("tradelab_trade_processing_duration_seconds",
                                  "From pick-up to commit of a trade's outcome",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.backlog = Gauge("tradelab_order_backlog", "Trades waiting in status NEW",
                             registry=r)
        self.oldest_age = Gauge("tradelab_oldest_pending_order_age_seconds",
                                "Age of the oldest NEW trade (0 when none)", registry=r)
        self.db_up = Gauge("tradelab_db_up", "1 when the last database call succeeded",
                           registry=r)
        self.last_batch = Gauge("tradelab_engine_last_batch_timestamp_seconds",
                                "Unix time the engine last polled for work successfully",
                                registry=r)
        self.db_busy = Gauge("tradelab_engine_db_busy_seconds",
                             "How long the engine's current database work has run "
                             "(0 when it waits for none)", registry=r)
        build = Gauge("tradelab_build_info", "tradelab version of this process",
                      ["version", "service"], registry=r)
        build.labels(version=__version__, service="engine").set(1)
        self.orders_received.labels(source="engine")
        for status in STATUSES:
            self.processed.labels(status=status)
        self.venue_orders = Counter("tradelab_venue_orders",
                                    "Orders answered by a venue, by venue and status",
                                    ["venue", "status"], registry=r)
        self.risk_rejections = Counter("tradelab_risk_rejections",
                                       "Orders refused before any venue, by reason",
                                       ["reason"], registry=r)
        self.position_shares = Gauge("tradelab_position_shares",
                                     "Net position (shares) by symbol and venue",
                                     ["symbol", "venue"], registry=r)
        self.position_notional = Gauge("tradelab_position_notional",
                                       "Net notional of the fills by symbol and venue",
                                       ["symbol", "venue"], registry=r)
        for reason in (*risk.REASONS, risk.STALE_REASON):
            self.risk_rejections.labels(reason=reason)
        self.fills_outside_limit = Counter(
            "tradelab_fills_outside_limit", "Fills past their order's limit price (the "
            "post-trade check; a healthy venue never does it), by venue", ["venue"], registry=r)
        self.lock_timeouts = Counter(
            "tradelab_db_lock_timeouts", "Statements that gave up waiting for a lock "
            "(lock_timeout)", registry=r)
        if chaos is not None:
            r.register(ChaosCollector(chaos))

    def watch(self, engine: Engine) -> None:
        """Per-venue label values and the gauges read at scrape time."""
        for venue in engine.venues.names:
            for status in STATUSES:
                self.venue_orders.labels(venue=venue, status=status)
            self.fills_outside_limit.labels(venue=venue)
        self.registry.register(TradingCollector(engine))


class Engine:
    def __init__(self, settings: Any, database_url: str, chaos: ChaosReader | None = None,
                 metrics: EngineMetrics | None = None, rng: random.Random | None = None,
                 order_rate: float | None = None,
                 db_work_limit_s: float = DB_WORK_LIMIT_S,
                 levers: LeverReader | None = None) -> None:
        self.settings = settings
        self.url = database_url
        self.chaos = chaos or ChaosReader(None, default_rate=settings.chaos.default_rate)
        self.metrics = metrics or EngineMetrics(self.chaos)
        self.rng = rng or random.Random()
        self.levers = levers or LeverReader(None)
        self.venues = Venues(settings, rng=self.rng)
        self.metrics.watch(self)
        self.order_rate = settings.engine.order_rate if order_rate is None else order_rate
        self.batch_size = settings.engine.batch_size
        self._conn = None
        self._db_ok: bool | None = None
        self._watchdog = Watchdog(db_work_limit_s)
        self.metrics.db_busy.set_function(self._watchdog.busy_s)
        self._flow_due = 0.0
        self._flow_at = time.monotonic()
        self._gauges_at = float("-inf")

    # -- the loop -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Process, generate flow and refresh gauges until `stop` is set; never raises
        for database trouble."""
        backoff = 0.5
        log.info("engine started", extra={"event": "engine_started",
                                          "order_rate": self.order_rate,
                                          "batch_size": self.batch_size})
        self._flow_at = time.monotonic()
        while not stop.is_set():
            try:
                self._generate_flow()
                done = self.process_batch()
                self._refresh_gauges()
                backoff = 0.5
            except _DbDown:
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                self._flow_at = time.monotonic()  # orders "not sent" while down are not owed
                continue
            if done is None or done < self.batch_size:  # idle or stalled: no need to hurry
                stop.wait(self.settings.engine.poll_interval_s)
        self.close()
        log.info("engine stopped", extra={"event": "engine_stopped"})

    def close(self) -> None:
        self._watchdog.stop()
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail; fine
                pass
            self._conn = None

    # -- one batch ------------------------------------------------------------------
    def process_batch(self) -> int | None:
        """Execute up to batch_size NEW trades in one transaction; the number done,
        or None while engine-stall is on."""
        active = self.chaos.active()
        if "engine-stall" in active:
            return None
        self.venues.tick(active)
        halts = self.levers.halts()
        if ALL in halts:
            self.metrics.last_batch.set(time.time())
            return 0
        with self._db() as conn, conn.transaction():
            rows = conn.execute(_PICK, (list(halts), self.batch_size)).fetchall()
            picked = time.monotonic()
            results = self._decide(conn, rows, active) if rows else []
            if results:
                # The orders go out together; the batch waits for the slowest answer.
                time.sleep(max(o.latency_s for _, o, _ in results))
                self._record(conn, results)
        finished = time.monotonic()
        self.metrics.last_batch.set(time.time())
        for row, outcome, venue in results:
            self.metrics.processed.labels(status=outcome.status).inc()
            self.metrics.duration.observe(finished - picked)
            if outcome.reason in _PRE_TRADE:  # no venue ever gives these reasons
                self.metrics.risk_rejections.labels(reason=outcome.reason).inc()
            else:
                self.metrics.venue_orders.labels(venue=venue, status=outcome.status).inc()
            self._check_fill(row, outcome, venue)
            level = logging.WARNING if outcome.status == "FAILED" else logging.INFO
            log.log(level, f"trade {row[0]} {outcome.status}: {outcome.message}", extra={
                "event": _EVENT_NAME[outcome.status], "trade_id": row[0],
                "client_order_id": row[1], "symbol": row[2], "status": outcome.status,
                "reason": outcome.reason, "fill_price": outcome.fill_price, "venue": venue,
                "latency_ms": round(outcome.latency_s * 1000, 1),
            })
        return len(results)

    def _check_fill(self, row: tuple, outcome: Outcome, venue: str) -> None:
        """The post-trade check: a fill past the order's limit is counted and logged."""
        problem = fill_problem({"status": outcome.status, "side": row[3],
                                "limit_price": row[5], "fill_price": _money(outcome.fill_price)})
        if problem is not None:
            self.metrics.fills_outside_limit.labels(venue=venue).inc()
            log.error(f"trade {row[0]}: {problem}", extra={
                "event": "fill_outside_limit", "trade_id": row[0], "client_order_id": row[1],
                "venue": venue})

    def _decide(self, conn, rows: list[tuple], active: dict[str, Any]
                ) -> list[tuple[tuple, Outcome, str]]:
        """Each picked order's outcome and venue: market data and risk, then the venue."""
        positions: dict[str, int] = {}
        for symbol, quantity in conn.execute(_LOCK_POSITIONS,
                                             (sorted({r[2] for r in rows}),)).fetchall():
            positions[symbol] = positions.get(symbol, 0) + quantity
        trading = self.settings.trading
        results = []
        for row in rows:
            order = Order(row[2], row[3], row[4], row[5])
            venue = self.levers.venue_for(order.symbol, trading)
            quote = self.venues.quote(venue, order.symbol)
            if quote.age_s > trading.max_price_age_s:
                outcome = _refused(risk.STALE_REASON,
                                   f"{venue}'s price for {order.symbol} is {quote.age_s:.1f} s "
                                   f"old (limit {trading.max_price_age_s:g} s)", quote.price)
            elif (breach := risk.check(order, quote.price, positions.get(order.symbol, 0),
                                       trading.risk)) is not None:
                outcome = _refused(breach.reason, breach.message, quote.price)
            else:
                outcome = self.venues.execute(venue, order, active)
            if outcome.status == "FILLED":
                positions[order.symbol] = (positions.get(order.symbol, 0)
                                           + risk.signed_quantity(order.side, order.quantity))
            results.append((row, outcome, venue))
        return results

    def _record(self, conn, results: list[tuple[tuple, Outcome, str]]) -> None:
        from psycopg.types.json import Jsonb

        fills = sorted((row[2], venue, risk.signed_quantity(row[3], row[4]),
                        _money(risk.signed_quantity(row[3], row[4]) * (o.fill_price or 0.0)))
                       for row, o, venue in results
                       if o.status == "FILLED" and o.fill_price is not None)
        with conn.cursor() as cur:
            cur.executemany(_FINISH, [
                (o.status, _money(o.fill_price), o.failure_reason, venue, row[0])
                for row, o, venue in results
            ])
            cur.executemany(_EVENT, [
                (row[0], _EVENT_NAME[o.status], o.status, Jsonb({**o.detail(), "venue": venue}))
                for row, o, venue in results
            ])
            if fills:
                cur.executemany(_ADD_FILL, fills)

    # -- background order flow ------------------------------------------------------
    def _generate_flow(self) -> None:
        now = time.monotonic()
        if self.order_rate <= 0:
            return
        self._flow_due = min(FLOW_MAX_PER_TICK, self._flow_due + (now - self._flow_at)
                             * self.order_rate)
        self._flow_at = now
        n = int(self._flow_due)
        if n:
            self.submit_orders(n)
            self._flow_due -= n

    def submit_orders(self, n: int) -> list[int]:
        """Insert `n` random NEW orders (source "engine"), each with its "received" event."""
        from psycopg.types.json import Jsonb

        orders = [self._random_order() for _ in range(n)]
        ids = []
        with self._db() as conn, conn.transaction(), conn.cursor() as cur:
            for o in orders:
                cur.execute(
                    "INSERT INTO trades (client_order_id, symbol, side, quantity, limit_price,"
                    " source, request_hash) VALUES (%s, %s, %s, %s, %s, 'engine', %s)"
                    " RETURNING id",
                    (o["client_order_id"], o["symbol"], o["side"], o["quantity"],
                     _money(o["limit_price"]), _hash(o)))
                ids.append(cur.fetchone()[0])
            cur.executemany(
                "INSERT INTO trade_events (trade_id, event, status, detail)"
                " VALUES (%s, 'received', 'NEW', %s)",
                [(i, Jsonb({"source": "engine"})) for i in ids])
        self.metrics.orders_received.labels(source="engine").inc(n)
        for i, o in zip(ids, orders, strict=True):
            log.info(f"order {i} received from the flow", extra={
                "event": "received", "trade_id": i, "client_order_id": o["client_order_id"],
                "source": "engine"})
        return ids

    def _random_order(self) -> dict[str, Any]:
        symbol = self.rng.choice(self.settings.symbols)
        side = self.rng.choice(("BUY", "SELL"))
        limit = None
        if self.rng.random() < 0.5:  # half limit orders, mostly near the market
            drift = self.rng.uniform(-0.015, 0.01)
            market = self.venues.price(symbol)
            limit = round(market * (1 + drift if side == "BUY" else 1 - drift), 2)
        return {"client_order_id": f"flow-{uuid.uuid4()}", "symbol": symbol, "side": side,
                "quantity": self.rng.randint(1, 500), "limit_price": limit}

    # -- gauges and the database ----------------------------------------------------
    def _refresh_gauges(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._gauges_at < GAUGE_REFRESH_S:
            return
        with self._db() as conn:
            count, age = conn.execute(_BACKLOG).fetchone()
            positions = conn.execute(_POSITIONS).fetchall()
            conn.commit()
        self.metrics.backlog.set(count)
        self.metrics.oldest_age.set(float(age))
        for symbol, venue, shares, notional in positions:
            self.metrics.position_shares.labels(symbol=symbol, venue=venue).set(shares)
            self.metrics.position_notional.labels(symbol=symbol, venue=venue).set(
                float(notional))
        self._gauges_at = time.monotonic()

    def refresh_gauges(self) -> None:
        """Backlog and oldest pending age now (raises TradelabError if the database is down)."""
        try:
            self._refresh_gauges(force=True)
        except _DbDown as exc:
            raise TradelabError(str(exc)) from None

    def _db(self):
        return _DbScope(self)

    def _connection(self):
        import psycopg

        from tradelab.db.connect import bounded_session

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url, connect_timeout=3, autocommit=False,
                application_name="tradelab-engine",
                **bounded_session(STATEMENT_TIMEOUT_MS, LOCK_TIMEOUT_MS,
                                  IDLE_IN_TRANSACTION_MS))
        return self._conn

    def _mark_db(self, ok: bool, error: BaseException | None = None) -> None:
        self.metrics.db_up.set(1 if ok else 0)
        if ok and self._db_ok is False:
            log.info("database is back", extra={"event": "db_recovered"})
        if not ok and self._db_ok is not False:
            from tradelab.db.connect import explain

            log.error(explain(error, self.url) if error else "database unavailable",
                      extra={"event": "db_unavailable"})
        self._db_ok = ok


_PRE_TRADE = (*risk.REASONS, risk.STALE_REASON)


def _refused(reason: str, message: str, market: float) -> Outcome:
    """A REJECTED outcome decided before any venue (no latency: nothing was sent)."""
    return Outcome("REJECTED", reason, message, None, market, 0.0)


class TradingCollector:
    """Read at scrape time: market data age by venue and symbol, and the halts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        age = GaugeMetricFamily("tradelab_market_data_age_seconds",
                                "Seconds since the venue's feed last published the symbol's "
                                "price", labels=["venue", "symbol"])
        for (venue, symbol), seconds in sorted(self.engine.venues.ages().items()):
            age.add_metric([venue, symbol], round(seconds, 3))
        yield age
        halts = self.engine.levers.halts()
        halted = GaugeMetricFamily("tradelab_trading_halted",
                                   "1 while trading is halted (symbol \"ALL\": the whole lab)",
                                   labels=["symbol"])
        halted.add_metric(["ALL"], 1.0 if ALL in halts else 0.0)
        for symbol in self.engine.settings.symbols:
            halted.add_metric([symbol], 1.0 if symbol in halts else 0.0)
        yield halted
        route = GaugeMetricFamily("tradelab_route", "1 for the venue each symbol is routed "
                                  "to now", labels=["symbol", "venue"])
        for symbol in self.engine.settings.symbols:
            chosen = self.engine.levers.venue_for(symbol, self.engine.settings.trading)
            for venue in self.engine.venues.names:
                route.add_metric([symbol, venue], 1.0 if venue == chosen else 0.0)
        yield route


class _DbDown(Exception):
    pass


class _DbScope:
    """Hands out the engine's connection; turns database trouble into _DbDown after
    closing the connection and marking tradelab_db_up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self):
        import psycopg

        try:
            conn = self.engine._connection()
        except psycopg.Error as exc:
            self.engine._mark_db(False, exc)
            raise _DbDown(str(exc)) from None
        self._token = self.engine._watchdog.watch(conn)
        return conn

    def __exit__(self, exc_type, exc, tb):
        import psycopg

        self.engine._watchdog.done(self._token)
        if exc_type is None:
            self.engine._mark_db(True)
            return False
        if issubclass(exc_type, psycopg.Error):
            self.engine.close()
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                # The database answered: another session holds a lock this work needs.
                self.engine.metrics.lock_timeouts.inc()
                log.error(f"database lock wait timed out: {str(exc).strip().splitlines()[0]}",
                          extra={"event": "db_lock_timeout"})
            elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                self.engine._mark_db(False, exc)
            else:  # e.g. schema not migrated yet: say so, keep trying
                log.error(f"database error: {str(exc).strip().splitlines()[0]}",
                          extra={"event": "db_error"})
                self.engine.metrics.db_up.set(0)
            raise _DbDown(str(exc)) from exc
        return False


def _money(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(f"{value:.4f}")


def _hash(order: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(order, sort_keys=True).encode()).hexdigest()


def main(settings: Any, lab: Any, metrics_bind: str | None = None) -> None:
    """`tradelab serve engine`: serve /metrics and run until SIGTERM or SIGINT."""
    from prometheus_client import start_http_server

    from tradelab.app.resource_faults import ResourceFaults
    from tradelab.db.connect import resolve_url
    from tradelab.logs import setup_logging

    setup_logging("engine")
    url = resolve_url(None, settings, lab, "app")
    chaos_file = chaos_file_from_env(lab)
    chaos = ChaosReader(chaos_file, default_rate=settings.chaos.default_rate,
                        started_at=datetime.now(UTC))
    levers = LeverReader(chaos_file.parent / LEVERS_FILE)
    memory_limit = settings.memory_limit_bytes("engine")
    metrics = EngineMetrics(chaos, memory_limit_bytes=memory_limit)
    # tradelab_operator_actions_total{command}: the audit log, counted where it is mounted
    metrics.registry.register(AuditCollector(chaos_file.parent / AUDIT_FILE))
    ResourceFaults(chaos, ("cpu-hog",), memory_limit).ensure_running()
    host, port = parse_bind(metrics_bind or f"{settings.bind_address}:{settings.ports.engine}",
                            option="--metrics-bind", example="127.0.0.1:9101")
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise TradelabError(f"cannot serve engine metrics on {host}:{port}: {exc.strerror}; "
                            "choose another with --metrics-bind HOST:PORT") from None
    log.info(f"engine metrics on http://{host}:{port}/metrics",
             extra={"event": "metrics_listening"})

    stop = threading.Event()

    def _stop(signum, _frame):
        log.info(f"signal {signal.Signals(signum).name}: stopping",
                 extra={"event": "engine_stopping"})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        Engine(settings, url, chaos=chaos, metrics=metrics, levers=levers).run(stop)
    finally:
        server.shutdown()
        server.server_close()
