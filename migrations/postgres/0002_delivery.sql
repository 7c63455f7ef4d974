-- Events, their deliveries, and the log of every attempt (both directions).

CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    company_id  TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    agent_id    TEXT,
    agent_name  TEXT,
    data        TEXT NOT NULL,
    metadata    TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX events_company ON events (company_id, created_at);

-- A publish retried with the same Idempotency-Key answers what the first one answered.
CREATE TABLE idempotency_keys (
    company_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    key         TEXT NOT NULL,
    response    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (company_id, user_id, key)
);

-- One row per (event, target). The id is stable across retries: receivers dedupe on it.
-- status: pending, delivered, failed (retries exhausted: replayable), cancelled (target gone).
-- A worker leases a due row by pushing next_attempt_at to the lease's end and stamping
-- lease_token: if the worker dies, the row simply becomes due again when the lease runs out.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    company_id      TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_token     TEXT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, status, created_at);

-- Every outgoing attempt and every incoming request.
CREATE TABLE webhook_logs (
    id                 TEXT PRIMARY KEY,
    webhook_type       TEXT NOT NULL,
    webhook_id         TEXT NOT NULL,
    delivery_id        TEXT,
    event_type         TEXT,
    status             TEXT NOT NULL,
    request_payload    TEXT,
    request_headers    TEXT NOT NULL,
    response_status    BIGINT,
    response_body      TEXT,
    error_message      TEXT,
    retry_count        BIGINT NOT NULL,
    processing_time_ms BIGINT NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX webhook_logs_by_webhook ON webhook_logs (webhook_id, created_at);
CREATE INDEX webhook_logs_by_age ON webhook_logs (created_at);

-- Running totals per webhook, updated with each log entry, so statistics never scan logs.
CREATE TABLE webhook_stats (
    webhook_id      TEXT PRIMARY KEY,
    webhook_type    TEXT NOT NULL,
    total           BIGINT NOT NULL,
    succeeded       BIGINT NOT NULL,
    failed          BIGINT NOT NULL,
    total_ms        BIGINT NOT NULL,
    last_success_at BIGINT,
    last_failure_at BIGINT
);

-- Circuit breaker state lives with the webhook so every node sees it and it survives restarts.
ALTER TABLE outgoing_webhooks ADD COLUMN payload_format TEXT;
ALTER TABLE outgoing_webhooks ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outgoing_webhooks ADD COLUMN circuit_open_until BIGINT;
ALTER TABLE outgoing_webhooks ADD COLUMN deactivated_reason TEXT;
CREATE INDEX outgoing_webhooks_active ON outgoing_webhooks (company_id) WHERE is_active;
