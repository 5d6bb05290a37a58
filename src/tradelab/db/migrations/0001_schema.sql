-- Trades and their audit trail. Status moves NEW -> FILLED | REJECTED | FAILED.
CREATE TABLE trades (
    id              bigserial PRIMARY KEY,
    client_order_id text        NOT NULL UNIQUE,
    symbol          text        NOT NULL,
    side            text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity        integer     NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
    limit_price     numeric(18, 4) CHECK (limit_price > 0),
    status          text        NOT NULL DEFAULT 'NEW'
                                CHECK (status IN ('NEW', 'FILLED', 'REJECTED', 'FAILED')),
    fill_price      numeric(18, 4),
    failure_reason  text,
    source          text        NOT NULL DEFAULT 'api',
    request_hash    text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trade_events (
    id          bigserial PRIMARY KEY,
    trade_id    bigint      NOT NULL REFERENCES trades (id),
    event       text        NOT NULL,
    status      text        NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The engine picks the oldest NEW trades (SKIP LOCKED): a partial index keeps it cheap.
CREATE INDEX trades_new_by_age ON trades (created_at, id) WHERE status = 'NEW';
-- investigate-failures: FAILED trades newest first, optionally by symbol.
CREATE INDEX trades_failed_by_time ON trades (created_at DESC) WHERE status = 'FAILED';
CREATE INDEX trades_failed_by_symbol_time ON trades (symbol, created_at DESC) WHERE status = 'FAILED';
-- investigate-failures: the share of all trades in the window that failed.
CREATE INDEX trades_by_time ON trades (created_at);
-- find-trade: a trade's timeline.
CREATE INDEX trade_events_by_trade ON trade_events (trade_id, created_at, id);
