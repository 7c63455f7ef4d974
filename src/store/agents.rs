//! Agents. An agent is referred to by its id or, within its tenant, by its unique name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Publication, Result, Store, StoreError, events::insert_publication, from_json,
    insert_within_quota, on_pool, on_writer, to_json,
};
use crate::domain::{
    agent::{Agent, AgentSettings, DEFAULT_ENDPOINT_TIMEOUT_SECS, Endpoint, EndpointFormat},
    delivery::Health,
    net::TargetUrl,
    outgoing::{DEFAULT_RETRY_COUNT, DEFAULT_RETRY_DELAY_SECS},
    quota::Owned,
    tenant::Tenant,
};

#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct AgentRow {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) company_id: String,
    pub(super) name: String,
    pub(super) endpoint: Option<String>,
    pub(super) consecutive_failures: i64,
    pub(super) circuit_open_until: Option<i64>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

/// The stored JSON form of an [`Endpoint`]. Fields added later have defaults, so rows written
/// before them still read.
#[derive(Serialize, Deserialize)]
struct EndpointJson {
    url: String,
    format: EndpointFormat,
    model: Option<String>,
    headers: BTreeMap<String, String>,
    #[serde(default = "default_retry_count")]
    retry_count: i64,
    #[serde(default = "default_retry_delay")]
    retry_delay: i64,
    #[serde(default = "default_timeout")]
    timeout: i64,
}

fn default_retry_count() -> i64 {
    DEFAULT_RETRY_COUNT
}

fn default_retry_delay() -> i64 {
    DEFAULT_RETRY_DELAY_SECS
}

fn default_timeout() -> i64 {
    DEFAULT_ENDPOINT_TIMEOUT_SECS
}

impl TryFrom<AgentRow> for Agent {
    type Error = StoreError;

    fn try_from(row: AgentRow) -> Result<Agent> {
        let endpoint = match row.endpoint {
            Some(json) => {
                let e: EndpointJson = from_json("endpoint", &json)?;
                Some(Endpoint {
                    url: TargetUrl::parse(&e.url)
                        .map_err(|err| StoreError::Corrupt(format!("endpoint.url: {err}")))?,
                    format: e.format,
                    model: e.model,
                    headers: e.headers,
                    retry_count: e.retry_count,
                    retry_delay: e.retry_delay,
                    timeout: e.timeout,
                })
            }
            None => None,
        };
        Ok(Agent {
            id: row.id,
            tenant: Tenant {
                user_id: row.user_id,
                company_id: row.company_id,
            },
            settings: AgentSettings {
                name: row.name,
                endpoint,
            },
            health: Health {
                consecutive_failures: row.consecutive_failures,
                circuit_open_until: row.circuit_open_until,
                deactivated_reason: None,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn endpoint_json(settings: &AgentSettings) -> Option<String> {
    settings.endpoint.as_ref().map(|e| {
        to_json(&EndpointJson {
            url: e.url.as_str().to_string(),
            format: e.format,
            model: e.model.clone(),
            headers: e.headers.clone(),
            retry_count: e.retry_count,
            retry_delay: e.retry_delay,
            timeout: e.timeout,
        })
    })
}

const COLUMNS: &str = "id, user_id, company_id, name, endpoint, consecutive_failures, \
     circuit_open_until, created_at, updated_at";

impl Store {
    /// Inserts `agent`, and the events that announce it in the same transaction, unless its
    /// company has `most` agents already; a name the tenant already uses is a conflict.
    pub async fn insert_agent(
        &self,
        agent: &Agent,
        announcement: Publication,
        most: i64,
    ) -> Result<()> {
        let company = agent.tenant.company_id.as_str();
        insert_within_quota!(self, Owned::Agents, most, company, tx => {
            sqlx::query(
                "INSERT INTO agents (id, user_id, company_id, name, endpoint, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&agent.id)
            .bind(&agent.tenant.user_id)
            .bind(&agent.tenant.company_id)
            .bind(&agent.settings.name)
            .bind(endpoint_json(&agent.settings))
            .bind(agent.created_at)
            .bind(agent.updated_at)
            .execute(&mut *tx)
            .await?;
            insert_publication!(tx, &announcement);
        });
        Ok(())
    }

    pub async fn list_agents(&self, tenant: &Tenant) -> Result<Vec<Agent>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM agents WHERE company_id = $1 AND user_id = $2
             ORDER BY created_at, id"
        );
        let rows: Vec<AgentRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(Agent::try_from).collect()
    }

    /// The tenant's agent whose id is `reference`, else whose name is.
    pub async fn get_agent(&self, tenant: &Tenant, reference: &str) -> Result<Agent> {
        let sql = format!(
            "SELECT {COLUMNS} FROM agents
             WHERE company_id = $1 AND user_id = $2 AND (id = $3 OR name = $3)
             ORDER BY CASE WHEN id = $3 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row: AgentRow = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .bind(reference)
            .fetch_one(pool)
            .await?);
        row.try_into()
    }

    /// Agents by id, whatever their tenant (for the delivery workers).
    pub async fn agents_by_id(&self, ids: &[&str]) -> Result<Vec<Agent>> {
        let select = format!("SELECT {COLUMNS} FROM agents WHERE");
        let rows: Vec<AgentRow> = self.rows_by_keys(&select, "id", ids).await?;
        rows.into_iter().map(Agent::try_from).collect()
    }

    /// Saves `agent`'s changes, and the events that announce them in the same transaction.
    pub async fn update_agent(&self, agent: &Agent, announcement: Publication) -> Result<()> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE agents SET name = $4, endpoint = $5, updated_at = $6
                 WHERE id = $1 AND company_id = $2 AND user_id = $3",
            )
            .bind(&agent.id)
            .bind(&agent.tenant.company_id)
            .bind(&agent.tenant.user_id)
            .bind(&agent.settings.name)
            .bind(endpoint_json(&agent.settings))
            .bind(agent.updated_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound);
            }
            insert_publication!(tx, &announcement);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes an agent and its inbox, and writes the events that announce it in the same
    /// transaction.
    pub async fn delete_agent(&self, agent: &Agent, announcement: Publication) -> Result<()> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM agent_messages WHERE agent_id = $1")
                .bind(&agent.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM agents WHERE id = $1 AND company_id = $2 AND user_id = $3")
                .bind(&agent.id)
                .bind(&agent.tenant.company_id)
                .bind(&agent.tenant.user_id)
                .execute(&mut *tx)
                .await?;
            insert_publication!(tx, &announcement);
            tx.commit().await?;
        });
        Ok(())
    }
}
