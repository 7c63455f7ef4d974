-- A counter per company that changes whenever one of its outgoing webhooks is created, deleted,
-- or changes what it subscribes to. Publishers cache the company's webhooks and re-read them only
-- when this moves, so a publish costs one primary-key read however many webhooks exist.

CREATE TABLE company_versions (
    company_id TEXT PRIMARY KEY,
    version    BIGINT NOT NULL
);

CREATE FUNCTION bump_company_version() RETURNS trigger AS $$
BEGIN
    INSERT INTO company_versions (company_id, version)
        VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD.company_id ELSE NEW.company_id END, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = company_versions.version + 1;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER outgoing_created AFTER INSERT ON outgoing_webhooks
    FOR EACH ROW EXECUTE FUNCTION bump_company_version();
CREATE TRIGGER outgoing_subscription_changed AFTER UPDATE OF is_active, event_types, filters ON outgoing_webhooks
    FOR EACH ROW EXECUTE FUNCTION bump_company_version();
CREATE TRIGGER outgoing_deleted AFTER DELETE ON outgoing_webhooks
    FOR EACH ROW EXECUTE FUNCTION bump_company_version();
