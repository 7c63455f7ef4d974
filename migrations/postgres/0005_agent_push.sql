-- Messages routed to an agent with an endpoint are pushed there by the same delivery machinery
-- as outgoing webhooks. A delivery's target says which table its webhook_id names: an outgoing
-- webhook, or an agent (whose endpoint then has a circuit of its own).
ALTER TABLE deliveries ADD COLUMN target TEXT NOT NULL DEFAULT 'webhook';
ALTER TABLE agents ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN circuit_open_until BIGINT;

-- Dedup records are swept by age (housekeeping), like logs.
CREATE INDEX incoming_dedup_by_age ON incoming_dedup (created_at);
