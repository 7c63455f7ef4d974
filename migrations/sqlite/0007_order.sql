-- Per-endpoint order (issue 11). Workers take due deliveries in publish order, given by `seq`:
-- here the table's rowid, which SQLite assigns one above the largest in the table at insert, and
-- the one writer makes insert order commit order. A rowid that is not declared may be renumbered
-- by VACUUM, so the table is rebuilt with `seq` as its INTEGER PRIMARY KEY. The text id keeps its
-- unique index: the storage is what it was (a rowid table plus an index on id).
-- `fifo` copies the webhook's `ordering` onto each delivery at publish, so a claim needs no join.
CREATE TABLE deliveries_ordered (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    company_id      TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_token     TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    target          TEXT NOT NULL DEFAULT 'webhook',
    fifo            BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO deliveries_ordered (id, event_id, webhook_id, company_id, event_type, status, attempts,
    next_attempt_at, lease_token, last_status, last_error, created_at, updated_at, target)
SELECT id, event_id, webhook_id, company_id, event_type, status, attempts, next_attempt_at,
    lease_token, last_status, last_error, created_at, updated_at, target
FROM deliveries ORDER BY created_at, rowid;
DROP TABLE deliveries;
ALTER TABLE deliveries_ordered RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, status, created_at);
-- Claims walk this in publish order. `seq` never changes, so only inserts and a delivery's end
-- touch it (leases and retries move `next_attempt_at`, not this). FIFO deliveries stay out of
-- it: those waiting behind their webhook's head would be walked past at every claim.
CREATE INDEX deliveries_queue ON deliveries (seq) WHERE status = 'pending' AND NOT fifo;
-- FIFO heads (the first entry of each webhook) are found here; only FIFO rows enter it, so
-- webhooks without order pay nothing. The predicates of both indexes must stay word for word
-- what `store::deliveries` asks (the planner matches them), like webhook_logs_failures.
CREATE INDEX deliveries_fifo ON deliveries (webhook_id, seq) WHERE status = 'pending' AND fifo;

ALTER TABLE outgoing_webhooks ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
