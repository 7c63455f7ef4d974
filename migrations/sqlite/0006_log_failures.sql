-- Filtering a webhook's log to its failures ("status=failed", "rejected", …) walked the webhook's
-- entries newest first, reading each row's status from the table, where its rows sit among every
-- other webhook's: with a million rows it cost 1.4× what it did with ten thousand. Failures get an
-- index of their own; only failed entries enter it, so the usual (successful) attempt writes
-- nothing more. The predicate must stay word for word what `store::logs` adds to such queries
-- (a test checks), or the database will not see that the index applies.
CREATE INDEX webhook_logs_failures ON webhook_logs (webhook_id, created_at)
    WHERE status NOT IN ('delivered', 'accepted');
