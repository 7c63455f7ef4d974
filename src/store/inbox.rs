//! Agent inboxes and the provider delivery ids already answered (dedup).

use serde_json::Value;

use super::{Result, Store, StoreError, from_json, logs::write_log, on_pool, to_json};
use crate::domain::{
    agent::{AgentMessage, MessageKind},
    log::LogEntry,
    tenant::Tenant,
};

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    agent_id: String,
    user_id: String,
    company_id: String,
    incoming_webhook_id: Option<String>,
    kind: String,
    content: String,
    created_at: i64,
}

impl TryFrom<MessageRow> for AgentMessage {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> Result<AgentMessage> {
        Ok(AgentMessage {
            kind: MessageKind::parse(&row.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("kind: {:?}", row.kind)))?,
            content: from_json("content", &row.content)?,
            id: row.id,
            agent_id: row.agent_id,
            tenant: Tenant {
                user_id: row.user_id,
                company_id: row.company_id,
            },
            incoming_webhook_id: row.incoming_webhook_id,
            created_at: row.created_at,
        })
    }
}

/// An accepted request as the store writes it.
pub struct Acceptance {
    pub message: AgentMessage,
    /// The sender's delivery id and the answer to remember for it.
    pub dedup: Option<(String, Value)>,
    pub log: LogEntry,
}

impl Store {
    /// Makes accepted requests durable in one transaction (one commit for the batch): per
    /// request its inbox message, its dedup record and its log entry. A request whose delivery
    /// id is already recorded writes nothing and reports `false`.
    pub async fn accept_batch(&self, batch: &[&Acceptance]) -> Result<Vec<bool>> {
        let mut written = Vec::with_capacity(batch.len());
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for accepted in batch {
                let (message, log) = (&accepted.message, &accepted.log);
                if let Some((key, response)) = &accepted.dedup {
                    let fresh = sqlx::query(
                        "INSERT INTO incoming_dedup (webhook_id, dedup_key, response, created_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (webhook_id, dedup_key) DO NOTHING",
                    )
                    .bind(&log.webhook_id)
                    .bind(key)
                    .bind(to_json(response))
                    .bind(message.created_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if fresh == 0 {
                        written.push(false);
                        continue;
                    }
                }
                sqlx::query(
                    "INSERT INTO agent_messages (id, agent_id, user_id, company_id,
                        incoming_webhook_id, kind, content, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&message.id)
                .bind(&message.agent_id)
                .bind(&message.tenant.user_id)
                .bind(&message.tenant.company_id)
                .bind(&message.incoming_webhook_id)
                .bind(message.kind.as_str())
                .bind(to_json(&message.content))
                .bind(message.created_at)
                .execute(&mut *tx)
                .await?;
                write_log!(tx, log);
                written.push(true);
            }
            tx.commit().await?;
        });
        Ok(written)
    }

    /// The answer given to the first request that carried delivery id `key`, if any.
    pub async fn find_dedup(&self, webhook_id: &str, key: &str) -> Result<Option<Value>> {
        let text: Option<String> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT response FROM incoming_dedup WHERE webhook_id = $1 AND dedup_key = $2",
        )
        .bind(webhook_id)
        .bind(key)
        .fetch_optional(pool)
        .await?);
        text.map(|t| from_json("response", &t)).transpose()
    }

    /// An agent's messages after the cursor `after` (a message id), oldest first.
    pub async fn list_messages(
        &self,
        agent_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AgentMessage>> {
        let rows: Vec<MessageRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, agent_id, user_id, company_id, incoming_webhook_id, kind, content, created_at
             FROM agent_messages WHERE agent_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(agent_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(AgentMessage::try_from).collect()
    }
}
