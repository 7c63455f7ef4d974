//! Outgoing webhook configurations.

use super::{
    Result, Store, StoreError, from_json, insert_within_quota, on_pool, on_writer, to_json,
};
use crate::domain::{
    delivery::Health,
    net::TargetUrl,
    notice::About,
    outgoing::{Ordering, OutgoingSettings, OutgoingWebhook, Subscription},
    payload::PayloadFormat,
    quota::Owned,
    rotation::PreviousSecret,
    tenant::Tenant,
};

#[derive(sqlx::FromRow, serde::Deserialize)]
struct OutgoingRow {
    id: String,
    user_id: String,
    company_id: String,
    name: String,
    url: String,
    event_types: String,
    is_active: bool,
    secret: Option<String>,
    headers: String,
    description: Option<String>,
    agent_id: Option<String>,
    retry_count: i64,
    retry_delay: i64,
    timeout: i64,
    rate_limit: Option<i64>,
    filters: String,
    payload_template: Option<String>,
    payload_format: Option<String>,
    ordering: String,
    consecutive_failures: i64,
    circuit_open_until: Option<i64>,
    deactivated_reason: Option<String>,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<OutgoingRow> for OutgoingWebhook {
    type Error = StoreError;

    fn try_from(row: OutgoingRow) -> Result<OutgoingWebhook> {
        Ok(OutgoingWebhook {
            id: row.id,
            tenant: Tenant {
                user_id: row.user_id,
                company_id: row.company_id,
            },
            settings: OutgoingSettings {
                name: row.name,
                url: TargetUrl::parse(&row.url)
                    .map_err(|e| StoreError::Corrupt(format!("url: {e}")))?,
                event_types: from_json("event_types", &row.event_types)?,
                is_active: row.is_active,
                secret: row.secret,
                headers: from_json("headers", &row.headers)?,
                description: row.description,
                agent_id: row.agent_id,
                retry_count: row.retry_count,
                retry_delay: row.retry_delay,
                timeout: row.timeout,
                rate_limit: row.rate_limit,
                filters: from_json("filters", &row.filters)?,
                payload_template: row.payload_template,
                payload_format: row.payload_format.as_deref().and_then(PayloadFormat::parse),
                ordering: parse_ordering(&row.ordering)?,
            },
            health: Health {
                consecutive_failures: row.consecutive_failures,
                circuit_open_until: row.circuit_open_until,
                deactivated_reason: row.deactivated_reason,
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

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: String,
    event_types: String,
    filters: String,
    ordering: String,
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;

    fn try_from(row: SubscriptionRow) -> Result<Subscription> {
        Ok(Subscription {
            webhook_id: row.id,
            event_types: from_json("event_types", &row.event_types)?,
            filters: from_json("filters", &row.filters)?,
            ordering: parse_ordering(&row.ordering)?,
        })
    }
}

fn parse_ordering(ordering: &str) -> Result<Ordering> {
    Ordering::parse(ordering).ok_or_else(|| StoreError::Corrupt(format!("ordering {ordering:?}")))
}

pub(super) const COLUMNS: &str = "id, user_id, company_id, name, url, event_types, is_active, secret, \
     headers, description, agent_id, retry_count, retry_delay, timeout, rate_limit, filters, \
     payload_template, payload_format, ordering, consecutive_failures, circuit_open_until, deactivated_reason, \
     previous_secret, previous_secret_expires_at, created_at, updated_at";

/// Binds `$1` id, `$2` user, `$3` company, `$4`..`$19` the settings, `$20` updated_at: the
/// shared parameter order of the insert and the update.
macro_rules! bind_outgoing {
    ($query:expr, $hook:expr) => {{
        let hook = $hook;
        let s = &hook.settings;
        $query
            .bind(&hook.id)
            .bind(&hook.tenant.user_id)
            .bind(&hook.tenant.company_id)
            .bind(&s.name)
            .bind(s.url.as_str())
            .bind(to_json(&s.event_types))
            .bind(s.is_active)
            .bind(&s.secret)
            .bind(to_json(&s.headers))
            .bind(&s.description)
            .bind(&s.agent_id)
            .bind(s.retry_count)
            .bind(s.retry_delay)
            .bind(s.timeout)
            .bind(s.rate_limit)
            .bind(to_json(&s.filters))
            .bind(&s.payload_template)
            .bind(s.payload_format.map(PayloadFormat::as_str))
            .bind(s.ordering.as_str())
            .bind(hook.updated_at)
    }};
}

impl Store {
    /// The subscriptions of the company's active outgoing webhooks: the candidates for its
    /// events, read without the rest of their settings.
    pub async fn active_subscriptions(&self, company_id: &str) -> Result<Vec<Subscription>> {
        let rows: Vec<SubscriptionRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, event_types, filters, ordering FROM outgoing_webhooks
             WHERE company_id = $1 AND is_active ORDER BY created_at, id",
        )
        .bind(company_id)
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(Subscription::try_from).collect()
    }

    /// Inserts `hook` unless its company has `most` outgoing webhooks already.
    pub async fn insert_outgoing(&self, hook: &OutgoingWebhook, most: i64) -> Result<()> {
        let company = hook.tenant.company_id.as_str();
        insert_within_quota!(self, Owned::OutgoingWebhooks, most, company, tx => bind_outgoing!(sqlx::query(
            "INSERT INTO outgoing_webhooks (id, user_id, company_id, name, url, event_types, is_active,
                secret, headers, description, agent_id, retry_count, retry_delay, timeout, rate_limit,
                filters, payload_template, payload_format, ordering, updated_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                $19, $20, $21)",
        ), hook)
        .bind(hook.created_at)
        .execute(&mut *tx)
        .await?);
        Ok(())
    }

    /// Outgoing webhooks matching `condition` (SQL over the columns, with `$n` for `params`).
    pub(super) async fn select_outgoing(
        &self,
        condition: &str,
        params: &[&str],
    ) -> Result<Vec<OutgoingWebhook>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM outgoing_webhooks WHERE {condition} ORDER BY created_at, id"
        );
        let rows: Vec<OutgoingRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for param in params {
                query = query.bind(*param);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(OutgoingWebhook::try_from).collect()
    }

    /// Outgoing webhooks by id, whoever owns them (for the delivery engine).
    pub async fn outgoing_by_id(&self, ids: &[&str]) -> Result<Vec<OutgoingWebhook>> {
        let select = format!("SELECT {COLUMNS} FROM outgoing_webhooks WHERE");
        let rows: Vec<OutgoingRow> = self.rows_by_keys(&select, "id", ids).await?;
        rows.into_iter().map(OutgoingWebhook::try_from).collect()
    }

    /// The tenant's outgoing webhooks, oldest first.
    pub async fn list_outgoing(&self, tenant: &Tenant) -> Result<Vec<OutgoingWebhook>> {
        self.select_outgoing(
            "company_id = $1 AND user_id = $2",
            &[&tenant.company_id, &tenant.user_id],
        )
        .await
    }

    /// One of the tenant's outgoing webhooks; another tenant's id is `NotFound`.
    pub async fn get_outgoing(&self, tenant: &Tenant, id: &str) -> Result<OutgoingWebhook> {
        self.select_outgoing(
            "id = $1 AND company_id = $2 AND user_id = $3",
            &[id, &tenant.company_id, &tenant.user_id],
        )
        .await?
        .pop()
        .ok_or(StoreError::NotFound)
    }

    /// Writes the settings of an existing webhook (of the same tenant). Its deliveries still
    /// pending take its `ordering` in the same transaction, so a webhook is never half FIFO.
    /// Switching it off (`is_active` from true to false) writes its `webhook.disabled` notice in
    /// the same transaction.
    pub async fn update_outgoing(&self, hook: &OutgoingWebhook) -> Result<()> {
        let lock = match self.backend() {
            "postgres" => "FOR UPDATE",
            _ => "",
        };
        let was_active = format!(
            "SELECT is_active FROM outgoing_webhooks
             WHERE id = $1 AND user_id = $2 AND company_id = $3 {lock}"
        );
        let disabled = on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let was_active: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(was_active))
                .bind(&hook.id)
                .bind(&hook.tenant.user_id)
                .bind(&hook.tenant.company_id)
                .fetch_optional(&mut *tx)
                .await?;
            let disabled = (was_active == Some(true) && !hook.settings.is_active).then(|| {
                About {
                    tenant: &hook.tenant,
                    webhook_id: &hook.id,
                    webhook_name: &hook.settings.name,
                    consecutive_failures: hook.health.consecutive_failures,
                }
                .disabled("switched off by its owner", hook.updated_at)
            });
            if let Some(notice) = &disabled {
                super::notices::insert_notices!(tx, std::slice::from_ref(notice));
            }
            let done = bind_outgoing!(sqlx::query(
                "UPDATE outgoing_webhooks SET name = $4, url = $5, event_types = $6, is_active = $7,
                    secret = $8, headers = $9, description = $10, agent_id = $11, retry_count = $12,
                    retry_delay = $13, timeout = $14, rate_limit = $15, filters = $16,
                    payload_template = $17, payload_format = $18, ordering = $19, updated_at = $20,
                    previous_secret = $21, previous_secret_expires_at = $22
                 WHERE id = $1 AND user_id = $2 AND company_id = $3",
            ), hook)
            .bind(hook.previous_secret.as_ref().map(|p| &p.secret))
            .bind(hook.previous_secret.as_ref().map(|p| p.expires_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(
                "UPDATE deliveries SET fifo = $2
                 WHERE webhook_id = $1 AND status = 'pending' AND fifo <> $2",
            )
            .bind(&hook.id)
            .bind(hook.settings.ordering == Ordering::Fifo)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            disabled
        });
        if disabled.is_some() {
            self.noticed.notify_one();
        }
        Ok(())
    }

    /// Replaces the signing secret of one of the tenant's webhooks with `secret`, keeping
    /// `previous` valid beside it, if the secret is still `current` (see
    /// [`Store::replace_secret`]).
    pub async fn rotate_outgoing_secret(
        &self,
        tenant: &Tenant,
        id: &str,
        current: Option<&str>,
        secret: &str,
        previous: Option<&PreviousSecret>,
        now: i64,
    ) -> Result<()> {
        let swap = super::SecretSwap {
            current,
            next: secret,
            previous,
            now,
        };
        self.replace_secret("outgoing_webhooks", "secret", tenant, id, swap)
            .await
    }

    pub async fn delete_outgoing(&self, tenant: &Tenant, id: &str) -> Result<()> {
        self.delete_owned("outgoing_webhooks", tenant, id).await
    }
}
