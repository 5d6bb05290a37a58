-- Trading operations: the venue an order went to, requeue marks, and positions by venue.
ALTER TABLE trades ADD COLUMN venue text;
-- `tradelab ops requeue`: when an order stuck NEW was put first in line again (once).
ALTER TABLE trades ADD COLUMN requeued_at timestamptz;

-- Net position per symbol and venue, kept by the engine in the transaction that records
-- each fill (so pre-trade risk reads one row per symbol, not every fill). `tradelab
-- positions` computes the same figures from the fills themselves.
CREATE TABLE positions (
    symbol        text           NOT NULL,
    venue         text           NOT NULL,
    net_quantity  bigint         NOT NULL DEFAULT 0,
    -- signed: BUY fills add quantity x fill price, SELL fills subtract it
    net_notional  numeric(24, 4) NOT NULL DEFAULT 0,
    fills         bigint         NOT NULL DEFAULT 0,
    updated_at    timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, venue)
);

-- positions from the fills: one index-only pass over the filled trades.
CREATE INDEX trades_filled_by_symbol_venue ON trades (symbol, venue)
    INCLUDE (side, quantity, fill_price) WHERE status = 'FILLED';

-- The engine keeps positions (tables made here get the default privileges of 0002: the
-- app role reads and writes them, the operator role reads them).

-- `tradelab ops db sessions` runs as the operator role: pg_read_all_stats lets it see every
-- session's state and query in pg_stat_activity, and nothing more (still read-only).
-- Granting it needs a superuser; a database owner without one gets sessions in less detail.
DO $$
BEGIN
    GRANT pg_read_all_stats TO tradelab_operator;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'not a superuser: tradelab_operator sees other sessions without detail';
END
$$;
