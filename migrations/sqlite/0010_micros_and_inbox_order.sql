-- Processing times to the microsecond (issue 12): requests that take less than a millisecond were
-- logged as 0 ms, so statistics showed 0 for real work. Entries written before keep only their
-- whole milliseconds (`NULL` here; readers fall back to `processing_time_ms * 1000`): no
-- rewrite of the log. New entries fill both columns, so nodes of the previous version still read
-- theirs during an upgrade. Totals are one row per webhook: converted in place.
ALTER TABLE webhook_logs ADD COLUMN processing_time_us INTEGER;
ALTER TABLE webhook_stats ADD COLUMN total_us INTEGER NOT NULL DEFAULT 0;
UPDATE webhook_stats SET total_us = total_ms * 1000;
