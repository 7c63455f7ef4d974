-- What a claim walks (issue 11; see `Store::claim_due`). Pending deliveries without order are
-- split in two by whether they have been touched since publish: a delivery is written with
-- `next_attempt_at = created_at`, and a lease, a retry or a deferral moves it later.
-- Untouched ones are all due: a claim walks them in publish order and reads only what it takes.
CREATE INDEX deliveries_fresh ON deliveries (seq)
    WHERE status = 'pending' AND NOT fifo AND next_attempt_at <= created_at;
-- Touched ones (in flight, waiting for a retry, deferred) are walked by when they fall due, so
-- those still waiting sit past the cut instead of in the way. The walk by `seq` over all pending
-- rows that this replaces stepped over every waiting row at each claim.
DROP INDEX deliveries_queue;
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, seq)
    WHERE status = 'pending' AND NOT fifo AND next_attempt_at > created_at;
-- The FIFO deliveries in flight (lease held): a claim asks this of each head's webhook; it
-- holds about one row per FIFO webhook however long the webhook's backlog is.
CREATE INDEX deliveries_fifo_leased ON deliveries (webhook_id)
    WHERE status = 'pending' AND fifo AND lease_token IS NOT NULL;
