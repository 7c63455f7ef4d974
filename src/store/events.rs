//! Publishing: an event and its deliveries are written in one transaction, so an accepted
//! event is never lost and never half-fanned-out.

use super::{Result, Store, StoreError, from_json};
use crate::domain::{delivery::Delivery, event::Event, tenant::Tenant};

#[derive(sqlx::FromRow, serde::Deserialize)]
struct EventRow {
    id: String,
    user_id: String,
    company_id: String,
    event_type: String,
    agent_id: Option<String>,
    agent_name: Option<String>,
    data: String,
    metadata: Option<String>,
    created_at: i64,
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Event> {
        Ok(Event {
            id: row.id,
            tenant: Tenant {
                user_id: row.user_id,
                company_id: row.company_id,
            },
            event_type: row.event_type,
            agent_id: row.agent_id,
            agent_name: row.agent_name,
            data: from_json("data", &row.data)?,
            metadata: row
                .metadata
                .map(|m| from_json("metadata", &m))
                .transpose()?,
            created_at: row.created_at,
        })
    }
}

/// An `Idempotency-Key` and the answer to remember for it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub response: String,
    /// SHA-256 of the request the key came with.
    pub request_hash: String,
}

/// Events and their deliveries, written together.
#[derive(Debug)]
pub struct Publication {
    pub tenant: Tenant,
    pub events: Vec<std::sync::Arc<Event>>,
    pub deliveries: Vec<Delivery>,
    pub idempotency: Option<Idempotency>,
}

/// The columns an event is inserted with, in the order of its bind values.
pub(super) const EVENT_COLUMNS: &str =
    "id, user_id, company_id, event_type, agent_id, agent_name, data, metadata, created_at";

/// The columns a delivery is inserted with, in the order of its bind values.
pub(super) const DELIVERY_COLUMNS: &str = "id, event_id, target, webhook_id, company_id, event_type, \
     status, attempts, next_attempt_at, lease_token, created_at, updated_at, fifo";

/// Inserts `$events` (a slice of `&Event`) on `$conn`, in multi-row statements.
macro_rules! insert_events {
    ($conn:expr, $events:expr) => {{
        let events: &[&crate::domain::event::Event] = $events;
        for chunk in events.chunks(crate::store::events::CHUNK) {
            sqlx::QueryBuilder::new(format!(
                "INSERT INTO events ({}) ",
                crate::store::events::EVENT_COLUMNS
            ))
            .push_values(chunk, |mut row, event| {
                row.push_bind(&event.id)
                    .push_bind(&event.tenant.user_id)
                    .push_bind(&event.tenant.company_id)
                    .push_bind(&event.event_type)
                    .push_bind(&event.agent_id)
                    .push_bind(&event.agent_name)
                    .push_bind(crate::store::to_json(&event.data))
                    .push_bind(event.metadata.as_ref().map(crate::store::to_json))
                    .push_bind(event.created_at);
            })
            .build()
            .execute(&mut *$conn)
            .await?;
        }
    }};
}
pub(super) use insert_events;

/// Inserts `$deliveries` (a slice of `&Delivery`) on `$conn`, in multi-row statements. Their
/// `seq` (publish order) is drawn by the database in the order given.
macro_rules! insert_deliveries {
    ($conn:expr, $deliveries:expr) => {{
        let deliveries: &[&crate::domain::delivery::Delivery] = $deliveries;
        for chunk in deliveries.chunks(crate::store::events::CHUNK) {
            sqlx::QueryBuilder::new(format!(
                "INSERT INTO deliveries ({}) ",
                crate::store::events::DELIVERY_COLUMNS
            ))
            .push_values(chunk, |mut row, delivery| {
                row.push_bind(&delivery.id)
                    .push_bind(&delivery.event_id)
                    .push_bind(delivery.target.as_str())
                    .push_bind(&delivery.webhook_id)
                    .push_bind(&delivery.company_id)
                    .push_bind(&delivery.event_type)
                    .push_bind(delivery.status.as_str())
                    .push_bind(delivery.attempts)
                    .push_bind(delivery.next_attempt_at)
                    .push_bind(&delivery.lease_token)
                    .push_bind(delivery.created_at)
                    .push_bind(delivery.updated_at)
                    .push_bind(delivery.fifo);
            })
            .build()
            .execute(&mut *$conn)
            .await?;
        }
    }};
}
pub(super) use insert_deliveries;

/// Inserts `$publication`'s events and deliveries on `$conn` (for a change written with the
/// events that announce it; its idempotency key, if any, is not recorded).
macro_rules! insert_publication {
    ($conn:expr, $publication:expr) => {{
        let publication: &crate::store::Publication = $publication;
        let events: Vec<&crate::domain::event::Event> = publication
            .events
            .iter()
            .map(std::sync::Arc::as_ref)
            .collect();
        crate::store::events::insert_events!($conn, &events);
        let deliveries: Vec<&crate::domain::delivery::Delivery> =
            publication.deliveries.iter().collect();
        crate::store::events::insert_deliveries!($conn, &deliveries);
    }};
}
pub(super) use insert_publication;

/// Records a publication's `Idempotency-Key`; no row is written when the tenant used the key.
pub(super) const INSERT_IDEMPOTENCY: &str =
    "INSERT INTO idempotency_keys (company_id, user_id, key, response, request_hash, created_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (company_id, user_id, key) DO NOTHING";

/// Rows per multi-row INSERT: well under both engines' bound-parameter limits.
pub(super) const CHUNK: usize = 500;

/// `SELECT … WHERE column IN ($1, …)` for `count` values.
pub(super) fn in_list(count: usize) -> String {
    (1..=count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// A number that changes whenever the company's outgoing webhooks (or their subscriptions)
    /// change; kept by triggers (migration 0004).
    pub async fn company_version(&self, company_id: &str) -> Result<i64> {
        let version: Option<(i64,)> = self
            .point_read(
                "SELECT version FROM company_versions WHERE company_id = $1",
                &[company_id],
            )
            .await?;
        Ok(version.map_or(0, |(version,)| version))
    }

    /// What an earlier publish with this key answered, if there was one, and the hash of its
    /// request (`None` for keys recorded before hashes were).
    pub async fn idempotent_response(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        self.point_read(
            "SELECT response, request_hash FROM idempotency_keys
             WHERE company_id = $1 AND user_id = $2 AND key = $3",
            &[&tenant.company_id, &tenant.user_id, key],
        )
        .await
    }

    /// Events by id (any order; missing ids are skipped).
    pub async fn events_by_id(&self, ids: &[&str]) -> Result<Vec<Event>> {
        let select = "SELECT id, user_id, company_id, event_type, agent_id, agent_name, data,
                metadata, created_at
             FROM events WHERE";
        let rows: Vec<EventRow> = self.rows_by_keys(select, "id", ids).await?;
        rows.into_iter().map(Event::try_from).collect()
    }
}
