-- Processing times to the microsecond (issue 12): requests that take less than a millisecond were
-- logged as 0 ms, so statistics showed 0 for real work. Entries written before keep only their
-- whole milliseconds (`NULL` here; readers fall back to `processing_time_ms * 1000`): no
-- rewrite of the log. New entries fill both columns, so nodes of the previous version still read
-- theirs during an upgrade. Totals are one row per webhook: converted in place.
ALTER TABLE webhook_logs ADD COLUMN processing_time_us BIGINT;
ALTER TABLE webhook_stats ADD COLUMN total_us BIGINT NOT NULL DEFAULT 0;
UPDATE webhook_stats SET total_us = total_ms * 1000;

-- The inbox read in commit order (issue 12). Readers took messages with an id above their
-- cursor, but ids (UUIDv7) are made before commit: a message with an older id committed after a
-- newer one fell behind a cursor already handed out and was never read. A number drawn at
-- insert has the same race where transactions overlap, so the number is drawn under a lock: a
-- transaction writing to an agent's inbox first takes that agent's advisory lock, which it holds
-- until it has committed, and only then draws `seq`. The next writer to that inbox draws its
-- number after the previous one is committed and visible, so within an inbox `seq` order is
-- commit order and nothing can appear behind a message already read (cursors are per agent).
-- The trigger does both for every insert, whoever writes (a node of the previous version too).
-- Messages already here are numbered in id order, the order readers saw them in. See
-- docs/decisions.md ("Inbox").
ALTER TABLE agent_messages ADD COLUMN seq BIGINT;
UPDATE agent_messages SET seq = numbered.n
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM agent_messages) AS numbered
WHERE agent_messages.id = numbered.id;
ALTER TABLE agent_messages ALTER COLUMN seq SET NOT NULL;
-- CACHE 1 (the default): every session draws from the one counter, so numbers rise in the order
-- they are drawn.
CREATE SEQUENCE agent_messages_seq CACHE 1 OWNED BY agent_messages.seq;
SELECT setval('agent_messages_seq', COALESCE(MAX(seq), 0) + 1, false) FROM agent_messages;

CREATE FUNCTION agent_messages_in_commit_order() RETURNS trigger AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('hookd inbox ' || NEW.agent_id, 0));
    NEW.seq := nextval('agent_messages_seq');
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER agent_messages_in_commit_order BEFORE INSERT ON agent_messages
    FOR EACH ROW EXECUTE FUNCTION agent_messages_in_commit_order();

DROP INDEX agent_messages_by_agent;
CREATE INDEX agent_messages_by_agent ON agent_messages (agent_id, seq);
