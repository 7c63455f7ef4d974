-- A counter per company that changes whenever one of its outgoing webhooks is created, deleted,
-- or changes what it subscribes to. Publishers cache the company's webhooks and re-read them only
-- when this moves, so a publish costs one primary-key read however many webhooks exist.

CREATE TABLE company_versions (
    company_id TEXT PRIMARY KEY,
    version    INTEGER NOT NULL
);

CREATE TRIGGER outgoing_created AFTER INSERT ON outgoing_webhooks BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (NEW.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER outgoing_subscription_changed AFTER UPDATE OF is_active, event_types, filters ON outgoing_webhooks BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (NEW.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER outgoing_deleted AFTER DELETE ON outgoing_webhooks BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (OLD.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;
