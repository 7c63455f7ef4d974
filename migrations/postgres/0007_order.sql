-- Per-endpoint order (issue 11). Workers take due deliveries in publish order, given by `seq`,
-- drawn from an identity sequence when the row is inserted. Rows already here are numbered in
-- the order PostgreSQL reads them (their insertion order, short of updates moving them).
-- Numbers are drawn before commit, so two publishes committing at the same moment on different
-- nodes may commit in the other order than their numbers; see docs/decisions.md ("Order").
-- `fifo` copies the webhook's `ordering` onto each delivery at publish, so a claim needs no join.
ALTER TABLE deliveries ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE deliveries ADD COLUMN fifo BOOLEAN NOT NULL DEFAULT FALSE;
-- Claims walk this in publish order. `seq` never changes, so only inserts and a delivery's end
-- touch it (leases and retries move `next_attempt_at`, not this). FIFO deliveries stay out of
-- it: those waiting behind their webhook's head would be walked past at every claim.
CREATE INDEX deliveries_queue ON deliveries (seq) WHERE status = 'pending' AND NOT fifo;
-- FIFO heads (the first entry of each webhook) are found here; only FIFO rows enter it, so
-- webhooks without order pay nothing. The predicates of both indexes must stay word for word
-- what `store::deliveries` asks (the planner matches them), like webhook_logs_failures.
CREATE INDEX deliveries_fifo ON deliveries (webhook_id, seq) WHERE status = 'pending' AND fifo;

ALTER TABLE outgoing_webhooks ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
