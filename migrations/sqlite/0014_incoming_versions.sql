-- The company version (0004) also moves when one of the company's incoming webhooks is created,
-- changed or deleted, or an agent is created, renamed, given another endpoint or deleted: a node
-- keeps the incoming webhooks it was sent requests for (with their fallback agent) and reads
-- them again only when this moves, so a request reads one primary key instead of three tables.
-- An agent's health (consecutive_failures, circuit_open_until) changes at every failed push and
-- does not move it: requests do not read it. SQLite has no trigger functions, so each trigger
-- spells the upsert out, as 0004's do.

CREATE TRIGGER incoming_created AFTER INSERT ON incoming_webhooks BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (NEW.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER incoming_changed AFTER UPDATE ON incoming_webhooks BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (NEW.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER incoming_deleted AFTER DELETE ON incoming_webhooks BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (OLD.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agent_created AFTER INSERT ON agents BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (NEW.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agent_changed AFTER UPDATE OF name, endpoint ON agents BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (NEW.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agent_deleted AFTER DELETE ON agents BEGIN
    INSERT INTO company_versions (company_id, version) VALUES (OLD.company_id, 1)
        ON CONFLICT (company_id) DO UPDATE SET version = version + 1;
END;
