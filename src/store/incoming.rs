//! Incoming webhook configurations.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use serde_json::Value;

use super::{
    Result, Store, StoreError, agents::AgentRow, from_json, inline_reads::by_name,
    insert_within_quota, on_pool, on_writer, to_json,
};
use crate::domain::{
    agent::Agent,
    api_key::hash_secret,
    incoming::{IncomingSettings, IncomingWebhook, Route, Transform},
    net::IpAllowlist,
    quota::Owned,
    rotation::PreviousSecret,
    signature::SourceVerification,
    tenant::Tenant,
};

#[derive(sqlx::FromRow, serde::Deserialize)]
struct IncomingRow {
    id: String,
    user_id: String,
    company_id: String,
    name: String,
    token: String,
    agent_id: Option<String>,
    agent_name: Option<String>,
    description: Option<String>,
    is_active: bool,
    transform_template: Option<String>,
    payload_transformation: Option<String>,
    rate_limit: i64,
    allowed_ips: String,
    verification: Option<String>,
    routes: Option<String>,
    dedup_header: Option<String>,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<IncomingRow> for IncomingWebhook {
    type Error = StoreError;

    fn try_from(row: IncomingRow) -> Result<IncomingWebhook> {
        let transform = match (row.transform_template, row.payload_transformation) {
            (Some(text), _) => Some(Transform::Text(text)),
            (None, Some(json)) => Some(Transform::Object(from_json::<Value>(
                "payload_transformation",
                &json,
            )?)),
            (None, None) => None,
        };
        let entries: Vec<String> = from_json("allowed_ips", &row.allowed_ips)?;
        let verification = row
            .verification
            .map(|json| from_json("verification", &json))
            .transpose()?;
        let routes: Option<Vec<Route>> = row
            .routes
            .map(|json| from_json("routes", &json))
            .transpose()?;
        Ok(IncomingWebhook {
            id: row.id,
            tenant: Tenant {
                user_id: row.user_id,
                company_id: row.company_id,
            },
            token: row.token,
            settings: IncomingSettings {
                name: row.name,
                agent_id: row.agent_id,
                agent_name: row.agent_name,
                description: row.description,
                is_active: row.is_active,
                transform,
                rate_limit: row.rate_limit,
                allowed_ips: IpAllowlist::parse(&entries)
                    .map_err(|e| StoreError::Corrupt(format!("allowed_ips: {e}")))?,
                verification,
                routes: routes.unwrap_or_default(),
                dedup_header: row.dedup_header,
            },
            previous_secret: PreviousSecret::from_columns(
                row.previous_secret,
                row.previous_secret_expires_at,
            ),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const COLUMNS: &str = "id, user_id, company_id, name, token, agent_id, agent_name, description, \
     is_active, transform_template, payload_transformation, rate_limit, allowed_ips, verification, routes, \
     dedup_header, previous_secret, previous_secret_expires_at, created_at, updated_at";

/// An incoming webhook with what a request to it reads next: the agent its requests go to when
/// no rule routes them elsewhere (if that agent exists yet), and its company's webhook version
/// (what the publisher's cache of the company's outgoing webhooks is checked against). One
/// query instead of three: each pooled read is a round trip (and, through sqlx, a second one
/// when the connection goes back to the pool), and these three were most of a request's reads.
#[derive(Debug)]
pub struct Addressed {
    pub hook: IncomingWebhook,
    pub fallback_agent: Option<Agent>,
    pub company_version: i64,
}

#[derive(sqlx::FromRow)]
struct AddressedRow {
    #[sqlx(flatten)]
    hook: IncomingRow,
    #[sqlx(flatten)]
    fallback: FallbackColumns,
    company_version: i64,
}

/// The fallback agent's columns (all `NULL` when it does not exist yet).
#[derive(sqlx::FromRow, serde::Deserialize)]
struct FallbackColumns {
    fallback_id: Option<String>,
    fallback_name: Option<String>,
    fallback_endpoint: Option<String>,
    fallback_failures: Option<i64>,
    fallback_circuit_open_until: Option<i64>,
    fallback_created_at: Option<i64>,
    fallback_updated_at: Option<i64>,
}

impl AddressedRow {
    /// Read by parts: serde's `flatten` would read `is_active` (an SQLite integer) as a number.
    fn inline(row: &rusqlite::Row<'_>) -> Result<AddressedRow> {
        Ok(AddressedRow {
            hook: by_name(row)?,
            fallback: by_name(row)?,
            company_version: row.get("company_version")?,
        })
    }
}

impl TryFrom<AddressedRow> for Addressed {
    type Error = StoreError;

    fn try_from(row: AddressedRow) -> Result<Addressed> {
        let fallback = row.fallback;
        let fallback_agent = match fallback.fallback_id {
            Some(id) => Some(Agent::try_from(AgentRow {
                id,
                user_id: row.hook.user_id.clone(),
                company_id: row.hook.company_id.clone(),
                name: fallback.fallback_name.unwrap_or_default(),
                endpoint: fallback.fallback_endpoint,
                consecutive_failures: fallback.fallback_failures.unwrap_or_default(),
                circuit_open_until: fallback.fallback_circuit_open_until,
                created_at: fallback.fallback_created_at.unwrap_or_default(),
                updated_at: fallback.fallback_updated_at.unwrap_or_default(),
            })?),
            None => None,
        };
        Ok(Addressed {
            hook: row.hook.try_into()?,
            fallback_agent,
            company_version: row.company_version,
        })
    }
}

/// The webhook `w`, its fallback agent found as [`Store::get_agent`] finds an agent (by id, else
/// by name, within the webhook's tenant), and its company's version; a `WHERE` on `w` follows.
static SELECT_ADDRESSED: LazyLock<String> = LazyLock::new(|| {
    let hook_columns: Vec<String> = COLUMNS
        .split(',')
        .map(|c| format!("w.{}", c.trim()))
        .collect();
    let reference = "COALESCE(w.agent_id, w.agent_name)";
    format!(
        "SELECT {}, a.id AS fallback_id, a.name AS fallback_name, a.endpoint AS fallback_endpoint,
            a.consecutive_failures AS fallback_failures,
            a.circuit_open_until AS fallback_circuit_open_until,
            a.created_at AS fallback_created_at, a.updated_at AS fallback_updated_at,
            COALESCE(v.version, 0) AS company_version
         FROM incoming_webhooks w
         LEFT JOIN agents a ON a.id = COALESCE(
             (SELECT x.id FROM agents x WHERE x.id = {reference}
                 AND x.company_id = w.company_id AND x.user_id = w.user_id),
             (SELECT x.id FROM agents x WHERE x.name = {reference}
                 AND x.company_id = w.company_id AND x.user_id = w.user_id))
         LEFT JOIN company_versions v ON v.company_id = w.company_id",
        hook_columns.join(", ")
    )
});

static SELECT_BY_TOKEN: LazyLock<String> =
    LazyLock::new(|| format!("{} WHERE w.token_hash = $1", &*SELECT_ADDRESSED));
static SELECT_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE w.id = $1 AND w.company_id = $2 AND w.user_id = $3",
        &*SELECT_ADDRESSED
    )
});

/// Incoming webhooks this node was sent requests for, by their token's hash, as last read. One
/// is good while its company's version is the one read with it: the version moves whenever an
/// incoming webhook, an agent's name or endpoint, or an outgoing subscription of the company
/// changes (triggers, migrations 0004 and `incoming_versions`), in the transaction that changes
/// it, on any node. Checking it is one primary-key read, where reading the webhook joins three
/// tables: 15% of an incoming request's CPU on SQLite, and on PostgreSQL the largest part of
/// what a request costs the database. Unknown tokens are never kept, so guessing fills nothing;
/// the webhooks kept hold at most [`KEPT_BYTES`] of templates and rules (a webhook may carry
/// 64 KiB of each), past which the cache starts over.
#[derive(Debug, Default)]
pub(super) struct AddressedCache(Mutex<Kept>);

#[derive(Debug, Default)]
struct Kept {
    by_token_hash: HashMap<String, Arc<Addressed>>,
    /// What the kept webhooks weigh, roughly (see [`weight`]).
    bytes: usize,
}

/// The most the kept webhooks may weigh together.
const KEPT_BYTES: usize = 16 << 20;

impl AddressedCache {
    fn get(&self, token_hash: &str) -> Option<Arc<Addressed>> {
        self.lock().by_token_hash.get(token_hash).cloned()
    }

    fn keep(&self, token_hash: String, addressed: Arc<Addressed>) {
        let added = weight(&addressed.hook);
        let mut kept = self.lock();
        if kept.bytes + added > KEPT_BYTES {
            *kept = Kept::default();
        }
        kept.bytes += added;
        if let Some(replaced) = kept.by_token_hash.insert(token_hash, addressed) {
            kept.bytes = kept.bytes.saturating_sub(weight(&replaced.hook));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Poisoning needs a panic while the map is held; nothing in here panics.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Roughly what a kept webhook takes: its templates and rules, which may be large, and a
/// kilobyte for the rest (names, ids, allowlist, verification, the agent).
fn weight(hook: &IncomingWebhook) -> usize {
    let transform = match &hook.settings.transform {
        Some(Transform::Text(source)) => source.len(),
        Some(Transform::Object(source)) => source.to_string().len(),
        None => 0,
    };
    let routes: usize = (hook.settings.routes.iter())
        .map(|route| route.when.len() + route.agent.len())
        .sum();
    1024 + transform + routes
}

/// Binds `$1` id, `$2` user, `$3` company, `$4`..`$12` the settings, `$13` updated_at,
/// `$14`..`$16` the receiving settings: the shared parameter order of the insert and the update.
macro_rules! bind_incoming {
    ($query:expr, $hook:expr) => {{
        let hook = $hook;
        let s = &hook.settings;
        let (text, object) = match &s.transform {
            Some(Transform::Text(text)) => (Some(text.clone()), None),
            Some(Transform::Object(object)) => (None, Some(to_json(object))),
            None => (None, None),
        };
        $query
            .bind(&hook.id)
            .bind(&hook.tenant.user_id)
            .bind(&hook.tenant.company_id)
            .bind(&s.name)
            .bind(&s.agent_id)
            .bind(&s.agent_name)
            .bind(&s.description)
            .bind(s.is_active)
            .bind(text)
            .bind(object)
            .bind(s.rate_limit)
            .bind(to_json(&s.allowed_ips.entries()))
            .bind(hook.updated_at)
            .bind(s.verification.as_ref().map(to_json))
            .bind((!s.routes.is_empty()).then(|| to_json(&s.routes)))
            .bind(&s.dedup_header)
    }};
}

impl Store {
    /// Inserts `hook` unless its company has `most` incoming webhooks already.
    pub async fn insert_incoming(&self, hook: &IncomingWebhook, most: i64) -> Result<()> {
        let company = hook.tenant.company_id.as_str();
        insert_within_quota!(self, Owned::IncomingWebhooks, most, company, tx => bind_incoming!(sqlx::query(
            "INSERT INTO incoming_webhooks (id, user_id, company_id, name, agent_id, agent_name,
                description, is_active, transform_template, payload_transformation, rate_limit,
                allowed_ips, updated_at, verification, routes, dedup_header, created_at, token,
                token_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19)",
        ), hook)
        .bind(hook.created_at)
        .bind(&hook.token)
        .bind(hash_secret(&hook.token))
        .execute(&mut *tx)
        .await?);
        Ok(())
    }

    pub async fn list_incoming(&self, tenant: &Tenant) -> Result<Vec<IncomingWebhook>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM incoming_webhooks WHERE company_id = $1 AND user_id = $2
             ORDER BY created_at, id"
        );
        let rows: Vec<IncomingRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(IncomingWebhook::try_from).collect()
    }

    pub async fn get_incoming(&self, tenant: &Tenant, id: &str) -> Result<IncomingWebhook> {
        let sql = format!(
            "SELECT {COLUMNS} FROM incoming_webhooks WHERE id = $1 AND company_id = $2 AND user_id = $3"
        );
        let row: IncomingRow = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .fetch_one(pool)
            .await?);
        row.try_into()
    }

    /// The webhook a receiving URL's token belongs to (found by the token's hash), with what a
    /// request to it reads next, in one query.
    ///
    /// Kept by the node while the company's version holds (see [`AddressedCache`]): then a
    /// request reads one primary key instead of three tables.
    pub async fn addressed_by_token(&self, token: &str) -> Result<Option<Arc<Addressed>>> {
        let token_hash = hash_secret(token);
        if let Some(kept) = self.addressed.get(&token_hash) {
            let company = &kept.hook.tenant.company_id;
            if self.company_version(company).await? == kept.company_version {
                return Ok(Some(kept));
            }
        }
        let row =
            (self.point_read_as(&SELECT_BY_TOKEN, &[&token_hash], AddressedRow::inline)).await?;
        let Some(addressed) = row.map(Addressed::try_from).transpose()? else {
            return Ok(None);
        };
        let addressed = Arc::new(addressed);
        self.addressed.keep(token_hash, Arc::clone(&addressed));
        Ok(Some(addressed))
    }

    /// [`Store::addressed_by_token`] for a webhook named by its id, within `tenant`.
    pub async fn addressed_by_id(
        &self,
        tenant: &Tenant,
        id: &str,
    ) -> Result<Option<Arc<Addressed>>> {
        let params = [id, &tenant.company_id, &tenant.user_id];
        let row = (self.point_read_as(&SELECT_BY_ID, &params, AddressedRow::inline)).await?;
        row.map(|row| Addressed::try_from(row).map(Arc::new))
            .transpose()
    }

    pub async fn update_incoming(&self, hook: &IncomingWebhook) -> Result<()> {
        let done = on_writer!(self, pool => bind_incoming!(sqlx::query(
            "UPDATE incoming_webhooks SET name = $4, agent_id = $5, agent_name = $6, description = $7,
                is_active = $8, transform_template = $9, payload_transformation = $10,
                rate_limit = $11, allowed_ips = $12, updated_at = $13, verification = $14,
                routes = $15, dedup_header = $16, previous_secret = $17,
                previous_secret_expires_at = $18
             WHERE id = $1 AND user_id = $2 AND company_id = $3",
        ), hook)
        .bind(hook.previous_secret.as_ref().map(|p| &p.secret))
        .bind(hook.previous_secret.as_ref().map(|p| p.expires_at))
        .execute(pool)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Replaces the verification of one of the tenant's webhooks with `verification` (its new
    /// secret), keeping `previous` valid beside it, if the stored verification is still
    /// `current` (see [`Store::replace_secret`]).
    pub async fn rotate_incoming_secret(
        &self,
        tenant: &Tenant,
        id: &str,
        current: &SourceVerification,
        verification: &SourceVerification,
        previous: Option<&PreviousSecret>,
        now: i64,
    ) -> Result<()> {
        let (current, next) = (to_json(current), to_json(verification));
        let swap = super::SecretSwap {
            current: Some(&current),
            next: &next,
            previous,
            now,
        };
        self.replace_secret("incoming_webhooks", "verification", tenant, id, swap)
            .await
    }

    pub async fn delete_incoming(&self, tenant: &Tenant, id: &str) -> Result<()> {
        self.delete_owned("incoming_webhooks", tenant, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incoming::IncomingChanges;

    fn addressed(transform_bytes: usize) -> Arc<Addressed> {
        let changes = IncomingChanges {
            name: Some("h".into()),
            agent_id: Some(Some("a".into())),
            transform: Some(Some(Transform::Text("x".repeat(transform_bytes)))),
            ..Default::default()
        };
        Arc::new(Addressed {
            hook: IncomingWebhook {
                id: "id".into(),
                tenant: Tenant {
                    user_id: "u".into(),
                    company_id: "c".into(),
                },
                token: "t".into(),
                settings: IncomingSettings::create(changes).unwrap(),
                previous_secret: None,
                created_at: 0,
                updated_at: 0,
            },
            fallback_agent: None,
            company_version: 1,
        })
    }

    /// Webhooks may carry 64 KiB templates: what is kept is bounded by their weight, not count.
    #[test]
    fn kept_webhooks_stay_under_their_byte_bound() {
        let cache = AddressedCache::default();
        for i in 0..1_000 {
            cache.keep(format!("hash-{i}"), addressed(64 * 1024));
            let kept = cache.lock();
            assert!(kept.bytes <= KEPT_BYTES, "{} after {i}", kept.bytes);
            let counted: usize = kept.by_token_hash.values().map(|a| weight(&a.hook)).sum();
            assert_eq!(kept.bytes, counted);
        }
        // Keeping a webhook again replaces it and counts it once.
        let cache = AddressedCache::default();
        cache.keep("same".into(), addressed(10));
        cache.keep("same".into(), addressed(20));
        assert_eq!(cache.lock().bytes, weight(&addressed(20).hook));
        assert_eq!(cache.get("same").unwrap().hook.settings.name, "h");
    }
}
