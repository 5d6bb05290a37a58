"""The trading API: a Flask app factory, served by gunicorn (`tradelab serve api`).

    app = create_app()                                  # settings and lab from the environment
    app = create_app(settings, database_url="postgresql://…")
    app.test_client().post("/trades", json={...})

Routes and answers are DESIGN.md's "Trading API" table. Every error is JSON
{"error", "message", "details"}; nothing a client sends can make a 500 (only
GET /error, on purpose). The database pool is opened lazily in each process, so a
gunicorn master never holds connections its forked workers would share.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any

from tradelab import __version__
from tradelab.app import models
from tradelab.db.watchdog import Watchdog

log = logging.getLogger("tradelab.api")

RETRY_AFTER_S = "1"
HALT_RETRY_AFTER_S = "5"  # a halt is an operator's decision: lasts longer than a blip
PROBE_TIMEOUT_S = 1.0
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 2000  # two requests replaying one client_order_id wait on its row
IDLE_IN_TRANSACTION_MS = 30_000
WORK_LIMIT_S = STATEMENT_TIMEOUT_MS / 1000 + 1  # the watchdog's: past the server's own bound
# Chaos latency applies to the business routes, not to probes and scrapes.
_LATENCY_ENDPOINTS = {"create_trade", "get_trade", "index"}
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}
# The `method` label of the HTTP metrics: these, or "other" (a client chooses the method).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
MAX_TRADE_ID = 2**63 - 1  # trades.id is a bigint


class DatabaseUnavailable(Exception):
    """The pool gave no connection in time, or the connection broke."""


class RecentlyUsed:
    """Pool check that skips connections used within the last `window_s` seconds.

    psycopg_pool's check_connection costs a round trip per checkout. Like HikariCP's
    aliveBypassWindowMs, a connection that just finished a query is trusted; one that
    sat idle (when a database restart would have broken it) is pinged first. A
    connection that breaks inside the window fails its request with a 503 and the
    pool discards it. `used` is called by the request's own thread, not as the pool's
    `reset` callback: a pool with a reset hands every returned connection to its worker
    threads, a thread hop per request that the next checkout waits for.
    """

    def __init__(self, watchdog: Watchdog, window_s: float = 0.5) -> None:
        self.watchdog = watchdog
        self.window_s = window_s
        self._last_used: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def used(self, conn) -> None:
        """`conn` just finished its work without an error."""
        self._last_used[conn] = time.monotonic()

    def check(self, conn) -> None:
        from psycopg_pool import ConnectionPool

        last = self._last_used.get(conn)
        if last is None or time.monotonic() - last > self.window_s:
            with self.watchdog.watching(conn, PROBE_TIMEOUT_S):  # a frozen server hangs it
                ConnectionPool.check_connection(conn)


LEAK_TIMEOUT_S = 0.5  # pool-exhaustion: how long to wait for each connection it takes


class ApiState:
    """Per-process resources of one app: the pool and the chaos reader, made after fork."""

    def __init__(self, settings: Any, database_url: str, chaos_file: Any) -> None:
        self.settings = settings
        self.database_url = database_url
        self.chaos_file = chaos_file
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._pool: Any = None
        self._chaos: Any = None
        self._levers: Any = None
        from datetime import UTC, datetime

        self.started_at = datetime.now(UTC)  # before any worker serves: see cleared_by_restart
        # Client-side bound on every piece of database work: a frozen server (db-pause)
        # runs no statement_timeout, so a request answers 503 instead of hanging.
        self.watchdog = Watchdog(WORK_LIMIT_S)
        self._recent = RecentlyUsed(self.watchdog)
        self._leaked: list[Any] = []  # connections the pool-exhaustion fault holds
        self._db_up = True  # the last probe's answer (database_up)
        self._leak_lock = threading.Lock()

    def _ensure_process(self) -> None:
        # A forked child must not reuse its parent's sockets or threads: start afresh.
        if self._pid != os.getpid():
            self._pid, self._pool, self._chaos, self._levers = os.getpid(), None, None, None
            self._leaked = []
            self.watchdog = Watchdog(WORK_LIMIT_S)  # a parent's work is not this process's
            self._recent = RecentlyUsed(self.watchdog)

    def leak_connections(self) -> None:
        """The pool-exhaustion fault: while it is on, this process takes every pooled
        connection and keeps it (a leak), so requests wait for the pool and get a 503
        after db_timeout_s; once it is off, the connections go back to the pool."""
        fault = self.chaos().active().get("pool-exhaustion")
        fault_on = fault is not None
        if fault_on == bool(self._leaked) or not self._leak_lock.acquire(blocking=False):
            return  # nothing to change, or another thread is changing it
        try:
            pool = self.pool()
            if fault_on:
                from psycopg_pool import PoolTimeout

                for _ in range(pool.max_size):
                    try:
                        self._leaked.append(pool.getconn(timeout=LEAK_TIMEOUT_S))
                    except PoolTimeout:
                        break  # the database is away: try again on the next request
                if self._leaked and not fault.hidden:  # a drill's leak leaves no note
                    log.warning("chaos: holding every pooled connection",
                                extra={"event": "chaos_injected", "fault": "pool-exhaustion",
                                       "connections": len(self._leaked)})
            else:
                while self._leaked:
                    pool.putconn(self._leaked.pop())
        finally:
            self._leak_lock.release()

    def pool(self):
        with self._lock:
            self._ensure_process()
            if self._pool is None:
                self._pool = self._open_pool()
            return self._pool

    def current_pool(self):
        """The pool if this process has opened one, else None."""
        return self._pool if self._pid == os.getpid() else None

    def chaos(self):
        with self._lock:
            self._ensure_process()
            if self._chaos is None:
                from tradelab.chaos_state import ChaosReader

                self._chaos = ChaosReader(self.chaos_file, started_at=self.started_at,
                                          default_rate=self.settings.chaos.default_rate)
                self._resource_faults().ensure_running()  # in this process: after fork
            return self._chaos

    def _resource_faults(self):
        from tradelab.app.process_metrics import service_root_pid
        from tradelab.app.resource_faults import ResourceFaults

        return ResourceFaults(self._chaos, ("memory-leak",),
                              self.settings.memory_limit_bytes("api"), root_pid=service_root_pid)

    def levers(self):
        with self._lock:
            self._ensure_process()
            if self._levers is None:
                from pathlib import Path

                from tradelab.levers_state import LEVERS_FILE, LeverReader

                self._levers = LeverReader(Path(self.chaos_file).parent / LEVERS_FILE)
            return self._levers

    def _open_pool(self):
        from psycopg_pool import ConnectionPool

        from tradelab.db.connect import bounded_session

        timeout = self.settings.api.db_timeout_s
        pool = ConnectionPool(
            self.database_url,
            min_size=1,
            max_size=self.settings.api.db_pool_size,
            timeout=timeout,
            # Checked on checkout: a connection broken by a database restart is
            # discarded there instead of failing the request that drew it.
            check=self._recent.check,  # no reset callback: see RecentlyUsed
            # Give up a reconnect loop soon; the next request starts a fresh one, so
            # recovery after a long outage does not wait out a long backoff.
            reconnect_timeout=max(5.0, 2 * timeout),
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(timeout)),
                "application_name": "tradelab-api",
                **bounded_session(STATEMENT_TIMEOUT_MS, LOCK_TIMEOUT_MS,
                                  IDLE_IN_TRANSACTION_MS),
            },
            name=f"tradelab-api-{os.getpid()}",
            open=False,
        )
        pool.open(wait=False)
        return pool

    @contextmanager
    def connection(self, timeout: float | None = None, work_limit_s: float | None = None):
        """A pooled autocommit connection; DatabaseUnavailable when there is none, or
        when the work done with it outlives `work_limit_s` (the watchdog's limit)."""
        import psycopg
        from psycopg_pool import PoolTimeout, TooManyRequests

        try:
            with self.pool().connection(timeout=timeout) as conn, \
                    self.watchdog.watching(conn, work_limit_s):
                yield conn
                self._recent.used(conn)
        except (PoolTimeout, TooManyRequests, psycopg.OperationalError,
                psycopg.errors.QueryCanceled) as exc:
            if isinstance(exc, psycopg.errors.LockNotAvailable):  # another session's lock
                from tradelab.app.api_metrics import api_metrics

                api_metrics(self.settings.slo.latency_threshold_s).lock_timeouts.inc()
            raise DatabaseUnavailable(str(exc).splitlines()[0] if str(exc) else
                                      type(exc).__name__) from exc

    def database_up(self) -> bool:
        """Whether the database answers, for tradelab_db_up at scrape time. A pool whose
        every connection is in use says nothing about the database (that is
        DatabasePoolExhausted's signal): the last answer stands, and the scrape does not
        wait for a connection past its own timeout (a 1s scrape interval in tests)."""
        pool = self.pool()
        stats = pool.get_stats()
        if stats.get("pool_available", 0) == 0 and stats.get("pool_size", 0) >= pool.max_size:
            return self._db_up
        limit = min(PROBE_TIMEOUT_S, self.settings.api.db_timeout_s)
        try:
            with self.connection(timeout=limit, work_limit_s=limit) as conn:
                conn.execute("SELECT 1")
            self._db_up = True
        except DatabaseUnavailable:
            self._db_up = False
        return self._db_up


def create_app(settings: Any = None, *, lab: Any = None, database_url: str | None = None,
               configure_logging: bool = True):
    """The Flask app. Database: `database_url`, else settings.database_url
    (TRADELAB_DATABASE_URL), else the lab's own database as the app role."""
    from flask import Flask

    from tradelab.chaos_state import chaos_file_from_env
    from tradelab.db.connect import resolve_url
    from tradelab.lab import Lab
    from tradelab.settings import load_settings

    if configure_logging:
        from tradelab.logs import setup_logging

        setup_logging("api")
    if lab is None:
        lab = Lab.from_flag(None)
    if settings is None:
        settings = load_settings(lab)
    url = resolve_url(database_url, settings, lab, "app")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.api.max_body_bytes
    app.url_map.converters["trade_id"] = _trade_id_converter()
    state = ApiState(settings, url, chaos_file_from_env(lab))
    app.extensions["tradelab"] = state
    _register_hooks(app, state)
    _register_errors(app)
    _register_routes(app, state)
    return app


# -- routes ------------------------------------------------------------------------------

def _register_routes(app, state: ApiState) -> None:
    from flask import request

    from tradelab.app import trades
    from tradelab.app.api_metrics import ScrapeTimeCollector, api_metrics, render_metrics
    from tradelab.app.process_metrics import ProcessTreeCollector, service_root_pid
    from tradelab.chaos_state import ChaosCollector
    from tradelab.db.migrate import current_version, latest_version

    settings = state.settings
    order_model = models.order_model(tuple(settings.symbols))
    metrics = api_metrics(settings.slo.latency_threshold_s)
    schema_latest = latest_version()
    processes = ProcessTreeCollector(service_root_pid, settings.memory_limit_bytes("api"))

    @app.post("/trades")
    def create_trade():
        body = _read_body(request)
        if not request.is_json:
            return error(415, "unsupported_media_type",
                         "send the order as JSON with Content-Type: application/json")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return error(400, "invalid_json", f"the body is not valid JSON: {exc}"[:200],
                         [{"field": "body", "message": "not valid JSON", "type": "json"}])
        from pydantic import ValidationError

        try:
            order = models.parse_order(order_model, data)
        except ValidationError as exc:
            details = models.error_details(exc)
            # A warning: a client sending invalid orders is worth a look, not a page.
            log.warning("order rejected", extra={"event": "order_rejected",
                                                 "fields": [d["field"] for d in details]})
            return error(400, "validation_error", "the order is invalid", details)

        if state.levers().halted(order.symbol):
            log.info("order refused: trading halted", extra={
                "event": "trading_halted", "client_order_id": order.client_order_id,
                "symbol": order.symbol})
            return error(503, "trading_halted",
                         f"trading in {order.symbol} is halted by the operator; retry later",
                         [{"field": "symbol", "message": "halted", "type": "halted"}],
                         headers={"Retry-After": HALT_RETRY_AFTER_S})

        fault = state.chaos().active().get("api-errors")
        if fault is not None and random.random() < (1.0 if fault.rate is None else fault.rate):
            if fault.hidden:  # a drill's: fail as a broken process would, naming nothing
                log.error("request failed", extra={"event": "request_failed",
                                                   "client_order_id": order.client_order_id})
                return error(500, "internal", "internal error; see the API's logs")
            log.warning("chaos: failing an order on purpose",
                        extra={"event": "chaos_injected", "fault": "api-errors",
                               "client_order_id": order.client_order_id})
            return error(500, "chaos_injected", "CHAOS: injected API failure (api-errors)")

        req_hash = models.request_hash(order)
        with state.connection() as conn:
            trade, created = trades.create_or_replay(conn, order, req_hash, source="api")
        ids = {"trade_id": trade["id"], "client_order_id": trade["client_order_id"]}
        if created:  # committed: the acknowledgement below is durable
            metrics.orders_received.labels(source="api").inc()
            log.info("trade accepted", extra={"event": "trade_accepted", **ids,
                                              "symbol": trade["symbol"], "side": trade["side"],
                                              "quantity": trade["quantity"]})
            return _json(_trade_out(trade), 201, {"Location": f"/trades/{trade['id']}"})
        if trade["request_hash"] == req_hash:
            metrics.replays.inc()
            log.info("trade replayed", extra={"event": "trade_replayed", **ids})
            return _json(_trade_out(trade), 200, {"Location": f"/trades/{trade['id']}"})
        log.info("client_order_id reused for another order",
                 extra={"event": "trade_conflict", **ids})
        return error(409, "idempotency_conflict",
                     f"client_order_id {trade['client_order_id']!r} was already used for a "
                     "different order; use a new client_order_id",
                     [{"field": "client_order_id", "message": "already used for another order",
                       "type": "conflict"}])

    @app.get("/trades/<trade_id:trade_id>")
    def get_trade(trade_id: int):
        with state.connection() as conn:
            trade = trades.get_trade(conn, trade_id)
        if trade is None:
            return error(404, "not_found", f"trade {trade_id} not found")
        return _json(models.TradeWithEvents.model_validate(trade).model_dump(mode="json"))

    @app.get("/")
    def index():
        return _json({"service": "tradelab-api", "version": __version__,
                      "message": "tradelab trading API: POST /trades, GET /trades/<id>; "
                                 "schema at /openapi.json"})

    @app.get("/error")
    def fail_on_purpose():
        log.error("failing on purpose", extra={"event": "intentional_error"})
        return error(500, "intentional_error", "this endpoint fails on purpose")

    @app.get("/healthz")
    def healthz():
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        try:
            with state.connection() as conn:
                version = current_version(conn)
        except DatabaseUnavailable as exc:
            return error(503, "db_unavailable", f"the database does not answer: {exc}",
                         headers={"Retry-After": RETRY_AFTER_S})
        if version != schema_latest:
            return error(503, "schema_outdated",
                         f"database schema is {version or 'empty'}, this API needs "
                         f"{schema_latest}: run `tradelab db migrate`",
                         headers={"Retry-After": RETRY_AFTER_S})
        return _json({"status": "ready", "schema_version": version})

    @app.get("/metrics")
    def prometheus_metrics():
        scrape_time = ScrapeTimeCollector(state.database_up, __version__)
        _observe_pool(state, metrics)
        body, content_type = render_metrics([ChaosCollector(state.chaos()), scrape_time,
                                             processes])
        return app.response_class(body, 200, content_type=content_type)

    @app.get("/openapi.json")
    def openapi():
        from tradelab.app.openapi import openapi_document

        return _json(openapi_document(tuple(settings.symbols)))


def _read_body(request) -> bytes:
    """The request body; 413 above max_body_bytes, 400 when the client's framing is broken.

    A bad chunked encoding surfaces while reading, as the server's own exception
    (gunicorn: a ParseException such as InvalidChunkSize or NoMoreData, an IOError;
    werkzeug: an OSError, or ClientDisconnected once its stream wraps it), mostly not
    as an HTTPException: without this it would be the catch-all 500, counted against
    the availability SLO.
    """
    from werkzeug.exceptions import ClientDisconnected

    framing_errors: tuple[type[BaseException], ...] = (OSError, ValueError,
                                                       ClientDisconnected)
    try:
        from gunicorn.http.errors import ParseException

        framing_errors += (ParseException,)
    except ImportError:
        pass
    try:
        return request.get_data(cache=False)
    except framing_errors as exc:
        raise MalformedBody(f"the request body could not be read: {exc}"[:200]) from None


class MalformedBody(Exception):
    """The body's framing (Content-Length, chunked encoding) is broken: the client's fault."""


def _trade_id_converter():
    """A path segment that is a possible trades.id: 1 to 19 digits, at most a bigint.
    Anything else is a 404 without a database call (and never int() of 4301 digits)."""
    from werkzeug.routing import BaseConverter, ValidationError

    class TradeIdConverter(BaseConverter):
        regex = r"\d{1,19}"

        def to_python(self, value: str) -> int:
            number = int(value)
            if number > MAX_TRADE_ID:
                raise ValidationError()
            return number

        def to_url(self, value: Any) -> str:
            return str(int(value))

    return TradeIdConverter


def _trade_out(trade: dict[str, Any]) -> dict[str, Any]:
    return models.Trade.model_validate(trade).model_dump(mode="json")


# -- hooks: chaos latency, metrics --------------------------------------------------------

def _register_hooks(app, state: ApiState) -> None:
    from flask import g, request

    from tradelab.app.api_metrics import api_metrics

    metrics = api_metrics(state.settings.slo.latency_threshold_s)

    @app.before_request
    def _start():
        g.tradelab_start = time.perf_counter()
        state.leak_connections()
        if request.endpoint in _LATENCY_ENDPOINTS:
            fault = state.chaos().active().get("api-latency")
            if fault is not None and fault.latency_ms and (
                    fault.rate is None or random.random() < fault.rate):
                time.sleep(fault.latency_ms / 1000)

    @app.after_request
    def _record(response):
        start = g.get("tradelab_start")
        route = route_label(request)
        method = method_label(request)
        metrics.requests.labels(method, route, str(response.status_code)).inc()
        if start is not None:
            metrics.duration.labels(method, route).observe(time.perf_counter() - start)
        return response

    @app.teardown_request
    def _pool_stats(_exc):
        _observe_pool(state, metrics)


def _observe_pool(state: ApiState, metrics: Any) -> None:
    pool = state.current_pool()
    if pool is not None:
        metrics.observe_pool(pool.get_stats())


def method_label(request) -> str:
    """The request method if it is a standard one, else "other": labels stay bounded."""
    return request.method if request.method in KNOWN_METHODS else "other"


def route_label(request) -> str:
    """The route template in OpenAPI style ("/trades/{trade_id}"); "unmatched" otherwise.
    Never the raw path: labels must stay bounded."""
    rule = request.url_rule
    if rule is None:
        rule = _rule_for_other_method(request)
    if rule is None:
        return "unmatched"
    return _openapi_path(rule.rule)


def _rule_for_other_method(request):
    """A 405's route (DELETE /trades): the rule the path matches with a method it allows."""
    from flask import current_app
    from werkzeug.exceptions import HTTPException, MethodNotAllowed

    exc = request.routing_exception
    if not isinstance(exc, MethodNotAllowed) or not exc.valid_methods:
        return None
    try:
        adapter = current_app.url_map.bind_to_environ(request.environ)
        rule, _ = adapter.match(method=exc.valid_methods[0], return_rule=True)
        return rule
    except HTTPException:
        return None


def _openapi_path(rule: str) -> str:
    import re

    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


# -- errors ------------------------------------------------------------------------------

def _register_errors(app) -> None:
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(DatabaseUnavailable)
    def _db_down(exc):
        log.warning("database unavailable", extra={"event": "db_unavailable",
                                                    "reason": str(exc)})
        return error(503, "db_unavailable", "the database is unavailable; retry shortly",
                     headers={"Retry-After": RETRY_AFTER_S})

    @app.errorhandler(MalformedBody)
    def _malformed(exc):
        log.info("malformed request body", extra={"event": "malformed_body",
                                                  "reason": str(exc)})
        return error(400, "malformed_body", str(exc),
                     [{"field": "body", "message": "broken framing", "type": "framing"}])

    @app.errorhandler(HTTPException)
    def _http(exc):
        code = exc.code or 500
        headers = {}
        if code == 405:
            allow = exc.get_response().headers.get("Allow")
            if allow:
                headers["Allow"] = allow
        return error(code, _HTTP_CODES.get(code, "http_error"),
                     exc.description or exc.name, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc):
        log.error("request failed", exc_info=exc, extra={"event": "request_failed"})
        return error(500, "internal", "internal error; see the API's logs")


def error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None):
    """A JSON error response in the API's one error shape."""
    return _json({"error": code, "message": message, "details": details or []}, status,
                 headers)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None):
    from flask import current_app

    response = current_app.response_class(json.dumps(data) + "\n", status,
                                          mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response
