-- Secret rotation: the secret a rotation replaced stays valid until previous_secret_expires_at
-- (unix ms), so senders and receivers switch without a gap. Outgoing webhooks sign with both
-- while it lasts; incoming webhooks accept either. NULL: no rotation in progress.
ALTER TABLE outgoing_webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE outgoing_webhooks ADD COLUMN previous_secret_expires_at BIGINT;
ALTER TABLE incoming_webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE incoming_webhooks ADD COLUMN previous_secret_expires_at BIGINT;
