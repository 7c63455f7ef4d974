-- Event types that tenants define beside the built-in catalogue. A type belongs to a company
-- (events fan out company-wide, so every user of the company publishes and subscribes to the
-- same types). `version` grows with every change, so a compiled schema cached under
-- (company, name, version) is never stale; archived types (archived_at set) refuse new
-- publishes but stay, so subscriptions naming them keep working and the name stays taken.
CREATE TABLE event_types (
    company_id   TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    data_schema  TEXT,
    version      BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    archived_at  BIGINT,
    PRIMARY KEY (company_id, name)
);
