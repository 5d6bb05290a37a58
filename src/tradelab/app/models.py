"""The API's request and response models: they validate, and they are the OpenAPI schema.

    Order = order_model(("AAPL", "MSFT"))
    order = parse_order(Order, {"symbol": "AAPL", "side": "BUY", "quantity": 10})
    order.client_order_id          # generated when the client sent none
    request_hash(order)            # what makes a replay "the same order"

Validation is strict on purpose: a quantity of 10.0, "10" or true is a client bug
that must come back as a 400 naming the field, not be silently coerced. The list
of symbols is a setting, so the order model is built per symbol list (cached).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

CLIENT_ORDER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_QUANTITY = 1_000_000
MAX_LIMIT_PRICE = 1_000_000_000  # numeric(18, 4) holds far more; this keeps typos out
PRICE_DECIMALS = 4
MIN_LIMIT_PRICE = 0.0001  # the smallest positive price with 4 decimals


def _at_most_4_decimals(value: float | None) -> float | None:
    # repr() is the shortest text that reads back as the same float: what the client sent.
    exponent = Decimal(repr(value)).as_tuple().exponent if value is not None else 0
    if isinstance(exponent, int) and exponent < -PRICE_DECIMALS:
        raise ValueError(f"at most {PRICE_DECIMALS} decimal places")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OrderBase(_Strict):
    """Fields of an order apart from `symbol`, whose allowed values are a setting."""

    client_order_id: Annotated[
        str | None,
        Field(pattern=CLIENT_ORDER_ID_PATTERN, min_length=1, max_length=64,
              description="Idempotency key, 1..64 of [A-Za-z0-9._:-]; generated when absent."),
    ] = None
    side: Literal["BUY", "SELL"]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY, description="Whole units.")]
    limit_price: Annotated[
        float | None,
        Field(ge=MIN_LIMIT_PRICE, le=MAX_LIMIT_PRICE, allow_inf_nan=False,
              description="Optional positive limit, at most 4 decimal places."),
        AfterValidator(_at_most_4_decimals),
    ] = None


@lru_cache(maxsize=8)
def order_model(symbols: tuple[str, ...]) -> type[OrderBase]:
    """The `Order` model accepting exactly `symbols`."""
    symbol_type = Literal[symbols]  # type: ignore[valid-type]
    return create_model("Order", __base__=OrderBase, symbol=(symbol_type, ...),
                        __module__=__name__)


def parse_order(model: type[OrderBase], data: Any) -> OrderBase:
    """A validated order with a client_order_id (generated if absent); ValidationError else."""
    order = model.model_validate(data)
    if order.client_order_id is None:
        order = order.model_copy(update={"client_order_id": f"srv-{uuid.uuid4().hex}"})
    return order


def request_hash(order: OrderBase) -> str:
    """sha256 of the canonical order, so 10 and 10.0 as a price are the same order."""
    price = order.limit_price
    canonical = {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,  # type: ignore[attr-defined]
        "side": order.side,
        "quantity": order.quantity,
        "limit_price": None if price is None else str(Decimal(repr(price)).normalize()),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def error_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as the API's `details`: each names its field."""
    details = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [str(p) for p in err["loc"]]
        details.append({"field": ".".join(loc) or "body", "message": err["msg"],
                        "type": err["type"]})
    return details


# -- responses ---------------------------------------------------------------------------

class TradeEvent(BaseModel):
    id: int
    event: str
    status: str
    detail: dict[str, Any]
    created_at: datetime


class Trade(BaseModel):
    id: int
    client_order_id: str
    symbol: str
    side: Literal["BUY", "SELL"]
    quantity: int
    limit_price: float | None
    status: Literal["NEW", "FILLED", "REJECTED", "FAILED"]
    fill_price: float | None
    failure_reason: str | None
    venue: str | None = None  # where the engine routed it; None while NEW
    source: str
    created_at: datetime
    updated_at: datetime


class TradeWithEvents(Trade):
    events: list[TradeEvent]


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str
    type: str | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. validation_error.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class Index(BaseModel):
    service: str
    version: str
    message: str


class Health(BaseModel):
    status: str
    schema_version: str | None = None
