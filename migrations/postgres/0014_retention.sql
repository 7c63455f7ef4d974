-- The log partitioned by day (issue 14). At 10,000 deliveries/s the log gains 864 million rows a
-- day; deleting a day's rows row by row (and vacuuming after) stops keeping up, dropping a day's
-- partition costs the same at any size. See docs/decisions.md ("Log partitions").
--
-- Partitions are ranges of `created_at` one UTC day wide, named `webhook_logs_pYYYYMMDD`.
-- Nodes create them ahead of time and drop them once their whole day is past the retention
-- (`Store::keep_log_partitions`). The DEFAULT partition takes any row whose day has no partition
-- (a clock far off, or nodes down for days), so no insert can fail for want of one; retention
-- deletes such rows one by one, and a node creating a day's partition moves that day's rows out
-- of it first.
--
-- A primary key of a partitioned table must hold the partition key: (id, created_at). An entry's
-- id is a UUIDv7 made once, so this is as unique as `id` was.
ALTER TABLE webhook_logs RENAME TO webhook_logs_unpartitioned;
ALTER TABLE webhook_logs_unpartitioned RENAME CONSTRAINT webhook_logs_pkey
    TO webhook_logs_unpartitioned_pkey;
ALTER INDEX webhook_logs_by_webhook RENAME TO webhook_logs_unpartitioned_by_webhook;
ALTER INDEX webhook_logs_by_age RENAME TO webhook_logs_unpartitioned_by_age;
ALTER INDEX webhook_logs_failures RENAME TO webhook_logs_unpartitioned_failures;

CREATE TABLE webhook_logs (
    id                 TEXT NOT NULL,
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
    created_at         BIGINT NOT NULL,
    processing_time_us BIGINT
) PARTITION BY RANGE (created_at);

CREATE TABLE webhook_logs_default PARTITION OF webhook_logs DEFAULT;

-- A partition for each day that holds rows (within the last 400 days: anything older stays in
-- the DEFAULT partition, where retention deletes it), and for today and the next two days.
DO $$
DECLARE
    day_ms CONSTANT BIGINT := 86400000;
    today  BIGINT := floor(extract(epoch FROM now()) * 1000 / day_ms)::BIGINT;
    day    BIGINT;
BEGIN
    FOR day IN
        SELECT DISTINCT created_at / day_ms FROM webhook_logs_unpartitioned
        WHERE created_at >= (today - 400) * day_ms AND created_at < (today + 3) * day_ms
        UNION SELECT generate_series(today, today + 2)
        ORDER BY 1
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF webhook_logs FOR VALUES FROM (%s) TO (%s)',
                       'webhook_logs_p' || to_char(to_timestamp(day * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       day * day_ms, (day + 1) * day_ms);
    END LOOP;
END $$;

INSERT INTO webhook_logs (id, webhook_type, webhook_id, delivery_id, event_type, status,
    request_payload, request_headers, response_status, response_body, error_message, retry_count,
    processing_time_ms, created_at, processing_time_us)
SELECT id, webhook_type, webhook_id, delivery_id, event_type, status, request_payload,
    request_headers, response_status, response_body, error_message, retry_count,
    processing_time_ms, created_at, processing_time_us
FROM webhook_logs_unpartitioned;

DROP TABLE webhook_logs_unpartitioned;

-- The indexes of migrations 0002 and 0006, built after the copy (once, not row by row). Every
-- partition gets its own; a read by webhook walks each partition's index newest first.
ALTER TABLE webhook_logs ADD PRIMARY KEY (id, created_at);
CREATE INDEX webhook_logs_by_webhook ON webhook_logs (webhook_id, created_at);
CREATE INDEX webhook_logs_failures ON webhook_logs (webhook_id, created_at)
    WHERE status NOT IN ('delivered', 'accepted');
-- Retention by age deletes only in the DEFAULT partition now; the others are dropped whole and
-- need no index by age.
CREATE INDEX webhook_logs_default_by_age ON webhook_logs_default (created_at);

-- Finished deliveries are retired by age through an index of their own: retirement read the
-- whole queue every minute on every node (a sequential scan, 240 ms at 1.1 million rows, growing
-- with the table), now what it deletes. Only finished deliveries enter it, and the update that
-- finishes one changes its status, which is indexed already, so that update writes every index
-- anyway (it is never a HOT update): this adds one entry to it. `deliveries` is not partitioned:
-- the claim takes rows by `ctid`, which is unique within one table only, and a claim over 35 day
-- partitions cost 10-20 ms to run and 40-70 ms to plan against 1.2 ms and 1 ms
-- (docs/benchmarks.md, docs/decisions.md "Log partitions"). The predicate must stay word for word
-- what `Store::prune_finished_work` asks.
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE status <> 'pending';
