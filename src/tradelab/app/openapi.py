"""The API's OpenAPI 3.1 document, generated from the pydantic models that validate.

    doc = openapi_document(("AAPL", "MSFT"))   # what GET /openapi.json answers

Schemas come from pydantic's JSON-schema generation (models_json_schema), so the
document cannot drift from the validator: a field added to the Order model shows
up here. Only the paths and their answers are written by hand below.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tradelab import __version__
from tradelab.app import models

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"description": description, **_json_content(_ref("ErrorBody"))}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                                "schema": {"type": "integer"}}}


@lru_cache(maxsize=8)
def openapi_document(symbols: tuple[str, ...]) -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    order = models.order_model(symbols)
    _, top = models_json_schema(
        [(order, "validation"), (models.Trade, "serialization"),
         (models.TradeWithEvents, "serialization"), (models.ErrorBody, "serialization"),
         (models.Index, "serialization"), (models.Health, "serialization")],
        ref_template=REF,
    )
    schemas = top["$defs"]
    db_down = _error("The database is unavailable; retry after Retry-After seconds",
                     _RETRY_AFTER)
    paths = {
        "/trades": {"post": {
            "operationId": "createTrade",
            "summary": "Submit an order (idempotent by client_order_id)",
            "requestBody": {"required": True, **_json_content(_ref("Order"))},
            "responses": {
                "201": {"description": "Trade created and committed",
                        **_json_content(_ref("Trade"))},
                "200": {"description": "Replay of the same order: the existing trade",
                        **_json_content(_ref("Trade"))},
                "400": _error("Invalid JSON or invalid fields (details name each field)"),
                "409": _error("client_order_id already used for a different order"),
                "413": _error("Body larger than the configured limit"),
                "415": _error("Body is not JSON"),
                "500": _error("Injected failure while the api-errors chaos fault is on"),
                "503": _error("The database is unavailable (error db_unavailable), or trading "
                              "in the symbol is halted by the operator (error trading_halted); "
                              "retry after Retry-After seconds", _RETRY_AFTER),
            },
        }},
        "/trades/{trade_id}": {"get": {
            "operationId": "getTrade",
            "summary": "A trade with its event history",
            "parameters": [{"name": "trade_id", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0,
                                       "maximum": 2**63 - 1}}],  # a bigint
            "responses": {
                "200": {"description": "The trade", **_json_content(_ref("TradeWithEvents"))},
                "404": _error("No such trade"),
                "503": db_down,
            },
        }},
        "/": {"get": {"operationId": "index", "summary": "Service name and version",
                      "responses": {"200": {"description": "About the service",
                                            **_json_content(_ref("Index"))}}}},
        "/error": {"get": {"operationId": "failOnPurpose",
                           "summary": "Fails on purpose (a target for error-rate practice)",
                           "responses": {"500": _error("Always")}}},
        "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness (no database)",
                             "responses": {"200": {"description": "The process lives",
                                                   **_json_content(_ref("Health"))}}}},
        "/readyz": {"get": {"operationId": "readyz",
                            "summary": "Readiness: database answers, schema current",
                            "responses": {"200": {"description": "Ready",
                                                  **_json_content(_ref("Health"))},
                                          "503": _error("Not ready", _RETRY_AFTER)}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics",
                             "responses": {"200": {"description": "Text exposition format",
                                                   "content": {"text/plain": {
                                                       "schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tradelab trading API", "version": __version__,
                 "description": "Orders into the tradelab trading system. Every error is "
                                "JSON {error, message, details}."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
