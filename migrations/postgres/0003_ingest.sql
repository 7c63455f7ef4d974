-- Incoming path: agents, their inboxes, provider delivery ids seen (dedup), and the incoming
-- webhook settings added for receiving (source verification, routing rules, dedup header).

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    company_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    endpoint    TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (company_id, user_id, name)
);

-- The inbox. Ids are UUIDv7 (time-ordered), so (agent_id, id) serves cursor pagination.
CREATE TABLE agent_messages (
    id                  TEXT PRIMARY KEY,
    agent_id            TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    company_id          TEXT NOT NULL,
    incoming_webhook_id TEXT,
    kind                TEXT NOT NULL,
    content             TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX agent_messages_by_agent ON agent_messages (agent_id, id);

-- Provider delivery ids (e.g. X-GitHub-Delivery) already answered, with the first answer.
CREATE TABLE incoming_dedup (
    webhook_id  TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    response    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, dedup_key)
);

ALTER TABLE incoming_webhooks ADD COLUMN verification TEXT;
ALTER TABLE incoming_webhooks ADD COLUMN routes TEXT;
ALTER TABLE incoming_webhooks ADD COLUMN dedup_header TEXT;
