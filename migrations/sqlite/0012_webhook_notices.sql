-- Announcements about webhooks themselves (webhook.disabled, webhook.circuit_opened,
-- webhook.circuit_closed, webhook.delivery_failed), written in the transaction that changes the
-- webhook and deleted in the one that publishes them as events: an outbox, so a node that dies
-- in between leaves them here for the next sweep instead of losing them.
CREATE TABLE webhook_notices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    company_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_notices_by_age ON webhook_notices (created_at, id);
