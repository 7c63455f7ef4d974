//! Agent inboxes and the provider delivery ids already answered (dedup).

use serde_json::Value;

use super::{Publication, Result, Store, StoreError, from_json, on_pool};
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
#[derive(Debug)]
pub struct Acceptance {
    pub message: AgentMessage,
    /// The sender's delivery id and the answer to remember for it.
    pub dedup: Option<(String, Value)>,
    pub log: LogEntry,
    /// The events the request causes (`chat.message.received`, perhaps `agent.created`) with
    /// their deliveries, including the push to the agent's endpoint: durable with the message.
    pub publication: Publication,
}

/// Records an accepted request's delivery id; no row is written when it is recorded already.
pub(super) const INSERT_DEDUP: &str =
    "INSERT INTO incoming_dedup (webhook_id, dedup_key, response, created_at)
     VALUES ($1, $2, $3, $4) ON CONFLICT (webhook_id, dedup_key) DO NOTHING";

/// The columns an inbox message is inserted with, in the order of its bind values.
pub(super) const MESSAGE_COLUMNS: &str =
    "id, agent_id, user_id, company_id, incoming_webhook_id, kind, content, created_at";

/// Records an accepted request's delivery id on `$conn`; evaluates to `false` (writing nothing)
/// when it is recorded already.
macro_rules! insert_dedup {
    ($conn:expr, $accepted:expr) => {{
        let accepted: &Acceptance = $accepted;
        match &accepted.dedup {
            Some((key, response)) => {
                sqlx::query(crate::store::inbox::INSERT_DEDUP)
                    .bind(&accepted.log.webhook_id)
                    .bind(key)
                    .bind(crate::store::to_json(response))
                    .bind(accepted.message.created_at)
                    .execute(&mut *$conn)
                    .await?
                    .rows_affected()
                    == 1
            }
            None => true,
        }
    }};
}
pub(super) use insert_dedup;

/// Inserts inbox messages (a slice of `&AgentMessage`) on `$conn`, in multi-row statements.
macro_rules! insert_messages {
    ($conn:expr, $messages:expr) => {{
        let messages: &[&crate::domain::agent::AgentMessage] = $messages;
        for chunk in messages.chunks(crate::store::events::CHUNK) {
            sqlx::QueryBuilder::new(format!(
                "INSERT INTO agent_messages ({}) ",
                crate::store::inbox::MESSAGE_COLUMNS
            ))
            .push_values(chunk, |mut row, message| {
                row.push_bind(&message.id)
                    .push_bind(&message.agent_id)
                    .push_bind(&message.tenant.user_id)
                    .push_bind(&message.tenant.company_id)
                    .push_bind(&message.incoming_webhook_id)
                    .push_bind(message.kind.as_str())
                    .push_bind(crate::store::to_json(&message.content))
                    .push_bind(message.created_at);
            })
            .build()
            .execute(&mut *$conn)
            .await?;
        }
    }};
}
pub(super) use insert_messages;

impl Store {
    /// Makes an accepted request durable (in the node's next group commit). `false`: its
    /// delivery id was recorded meanwhile, and nothing was written.
    pub async fn accept(&self, acceptance: Acceptance) -> Result<bool> {
        self.write(super::batch::Op::Accept(Box::new(acceptance)))
            .await
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
