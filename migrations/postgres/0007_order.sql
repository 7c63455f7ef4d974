-- Per-endpoint order (issue 11). Workers take due deliveries in publish order, given by `seq`,
-- drawn from an identity sequence when the row is inserted. Rows already here are numbered in
-- the order PostgreSQL reads them (their insertion order, short of updates moving them).
-- Numbers are drawn before commit, so two publishes committing at the same moment on different
-- nodes may commit in the other order than their numbers; see docs/decisions.md ("Order").
-- `fifo` copies the webhook's `ordering` onto each delivery at publish, so a claim needs no join.
ALTER TABLE deliveries ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE deliveries ADD COLUMN fifo BOOLEAN NOT NULL DEFAULT FALSE;
-- The claim walks this in publish order. `seq` never changes, so only inserts and a delivery's
-- end touch it (leases and retries move `next_attempt_at`, not this).
CREATE INDEX deliveries_queue ON deliveries (seq) WHERE status = 'pending';
-- A FIFO delivery is claimed only when nothing of its webhook is ahead of it (the first entry
-- of its webhook here) and nothing of its webhook is in flight (the second). Only FIFO rows
-- enter them, so webhooks without order pay nothing. The predicates must stay word for word
-- what `store::deliveries` asks, like webhook_logs_failures.
CREATE INDEX deliveries_fifo ON deliveries (webhook_id, seq)
    WHERE status = 'pending' AND fifo;
CREATE INDEX deliveries_fifo_in_flight ON deliveries (webhook_id)
    WHERE status = 'pending' AND fifo AND lease_token IS NOT NULL;

ALTER TABLE outgoing_webhooks ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
