-- Least privilege: every grant the lab's roles hold is here (roles themselves are made by
-- tradelab.db.migrate before any migration runs, so this file can name them).

-- Servers before PostgreSQL 15 let every role create objects in schema public, and every
-- server lets every role make temporary tables: neither is needed by the lab's roles.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

-- Start from nothing (a database migrated before this file had broader grants).
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM tradelab_app, tradelab_operator;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM tradelab_app, tradelab_operator;

-- The app role (API and engine): inserts orders and moves their status forward; the audit
-- trail is append-only; it reads the schema version (/readyz) but never changes it.
GRANT SELECT, INSERT, UPDATE ON trades TO tradelab_app;
GRANT SELECT, INSERT ON trade_events TO tradelab_app;
GRANT SELECT ON schema_migrations TO tradelab_app;
GRANT USAGE ON SEQUENCE trades_id_seq, trade_events_id_seq TO tradelab_app;

-- The operator role (find-trade, investigate-failures): reads, nothing else.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO tradelab_operator;

-- Tables later migrations create: the app may read and write them (a later migration
-- narrows this where it must, as this one does), the operator may read them.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO tradelab_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO tradelab_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO tradelab_operator;
