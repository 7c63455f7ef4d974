-- hookd schema, SQLite flavour. Timestamps are unix milliseconds (INTEGER) in both backends so that
-- range scans and comparisons behave identically; JSON columns are TEXT.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    name        TEXT,
    user_id     TEXT NOT NULL,
    company_id  TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE outgoing_webhooks (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    company_id       TEXT NOT NULL,
    name             TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_types      TEXT NOT NULL,
    is_active        BOOLEAN NOT NULL,
    secret           TEXT,
    headers          TEXT NOT NULL,
    description      TEXT,
    agent_id         TEXT,
    retry_count      INTEGER NOT NULL,
    retry_delay      INTEGER NOT NULL,
    timeout          INTEGER NOT NULL,
    rate_limit       INTEGER,
    filters          TEXT NOT NULL,
    payload_template TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX outgoing_webhooks_tenant ON outgoing_webhooks (company_id, user_id, created_at);

CREATE TABLE incoming_webhooks (
    id                     TEXT PRIMARY KEY,
    user_id                TEXT NOT NULL,
    company_id             TEXT NOT NULL,
    name                   TEXT NOT NULL,
    token                  TEXT NOT NULL,
    token_hash             TEXT NOT NULL UNIQUE,
    agent_id               TEXT,
    agent_name             TEXT,
    description            TEXT,
    is_active              BOOLEAN NOT NULL,
    transform_template     TEXT,
    payload_transformation TEXT,
    rate_limit             INTEGER NOT NULL,
    allowed_ips            TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);
CREATE INDEX incoming_webhooks_tenant ON incoming_webhooks (company_id, user_id, created_at);
