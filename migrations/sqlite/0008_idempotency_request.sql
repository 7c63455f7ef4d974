-- The request an Idempotency-Key was first used with (SHA-256 of its events), so that the same key
-- with a different request is refused instead of answered with the first request's result.
-- NULL for keys recorded before this column existed.
ALTER TABLE idempotency_keys ADD COLUMN request_hash TEXT;
