-- Processing times to the microsecond (issue 12): requests that take less than a millisecond were
-- logged as 0 ms, so statistics showed 0 for real work. Entries written before keep only their
-- whole milliseconds (`NULL` here; readers fall back to `processing_time_ms * 1000`): no
-- rewrite of the log. New entries fill both columns, so nodes of the previous version still read
-- theirs during an upgrade. Totals are one row per webhook: converted in place.
ALTER TABLE webhook_logs ADD COLUMN processing_time_us INTEGER;
ALTER TABLE webhook_stats ADD COLUMN total_us INTEGER NOT NULL DEFAULT 0;
UPDATE webhook_stats SET total_us = total_ms * 1000;

-- The inbox read in commit order (issue 12). Readers took messages with an id above their
-- cursor, but ids (UUIDv7) are made before commit: a message with an older id committed after a
-- newer one fell behind a cursor already handed out and was never read. Here each message gets
-- `seq`, the table's rowid, when it is written; SQLite's one writer makes that commit order, and
-- a rowid is one above the largest present, so always above any message a cursor can name (a
-- cursor is a message id, looked up when read). Declared as the INTEGER PRIMARY KEY, as
-- deliveries' is (migration 0007), so VACUUM cannot renumber it. Messages already here are
-- numbered in id order, the order readers saw them in.
CREATE TABLE agent_messages_ordered (
    seq                 INTEGER PRIMARY KEY,
    id                  TEXT NOT NULL UNIQUE,
    agent_id            TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    company_id          TEXT NOT NULL,
    incoming_webhook_id TEXT,
    kind                TEXT NOT NULL,
    content             TEXT NOT NULL,
    created_at          INTEGER NOT NULL
);
INSERT INTO agent_messages_ordered (id, agent_id, user_id, company_id, incoming_webhook_id, kind,
    content, created_at)
SELECT id, agent_id, user_id, company_id, incoming_webhook_id, kind, content, created_at
FROM agent_messages ORDER BY id;
DROP TABLE agent_messages;
ALTER TABLE agent_messages_ordered RENAME TO agent_messages;
CREATE INDEX agent_messages_by_agent ON agent_messages (agent_id, seq);
