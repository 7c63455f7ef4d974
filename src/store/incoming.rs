//! Incoming webhook configurations.

use serde_json::Value;

use super::{Result, Store, StoreError, from_json, on_pool, on_writer, to_json};
use crate::domain::{
    api_key::hash_secret,
    incoming::{IncomingSettings, IncomingWebhook, Route, Transform},
    net::IpAllowlist,
    rotation::PreviousSecret,
    signature::SourceVerification,
    tenant::Tenant,
};

#[derive(sqlx::FromRow)]
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
    pub async fn insert_incoming(&self, hook: &IncomingWebhook) -> Result<()> {
        on_writer!(self, pool => bind_incoming!(sqlx::query(
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
        .execute(pool)
        .await
        .map(drop)?);
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

    /// The webhook a receiving URL's token belongs to, found by the token's hash.
    pub async fn find_incoming_by_token(&self, token: &str) -> Result<Option<IncomingWebhook>> {
        let sql = format!("SELECT {COLUMNS} FROM incoming_webhooks WHERE token_hash = $1");
        let row: Option<IncomingRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(hash_secret(token))
            .fetch_optional(pool)
            .await?);
        row.map(IncomingWebhook::try_from).transpose()
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
