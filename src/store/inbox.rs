//! Agent inboxes and the provider delivery ids already answered (dedup).
//!
//! **Read order.** A reader passes a cursor and takes what lies after it, so within an inbox a
//! message must never become readable behind one already read. Message ids (UUIDv7) are made
//! before commit and cannot serve. Each message gets `seq` when it is written, in commit order
//! per inbox: on SQLite one writer commits at a time; on PostgreSQL a trigger (migration 0010)
//! draws `seq` under the agent's advisory lock, held until commit, so the next writer to that
//! inbox draws after the previous one is committed and visible. Group commits insert messages
//! last, and in agent order: a transaction holding inbox locks then waits for no row lock, and
//! two take their inbox locks in the same order, so none deadlocks.

use serde_json::Value;

use super::{Publication, Result, Store, StoreError, from_json, on_pool};
use crate::domain::{
    agent::{AgentMessage, MessageKind},
    log::LogEntry,
    tenant::Tenant,
};

/// Content characters one page of an inbox holds at most (a message bigger than this comes
/// alone).
pub const PAGE_CONTENT: i64 = 4 * 1024 * 1024;

/// The last `seq` of `sizes` (each `(seq, size)`, in order) that keeps their running total
/// within `budget`: at least the first, whatever its size.
fn last_within(sizes: &[(i64, i64)], budget: i64) -> Option<i64> {
    let mut total = 0;
    let mut through = None;
    for &(seq, size) in sizes {
        total += size;
        if through.is_some() && total > budget {
            break;
        }
        through = Some(seq);
    }
    through
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    seq: i64,
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

/// Where a message stands in its inbox's commit order (see the module's doc): after a cursor
/// means after the position of the message it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxPosition(i64);

/// A page of an inbox, in commit order.
#[derive(Debug)]
pub struct InboxPage {
    pub messages: Vec<AgentMessage>,
    /// The position of the page's last message: where the next page starts.
    pub last: Option<InboxPosition>,
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

impl Store {
    /// The answer given to the first request that carried delivery id `key`, if any.
    pub async fn find_dedup(&self, webhook_id: &str, key: &str) -> Result<Option<Value>> {
        let text: Option<(String,)> = self
            .point_read(
                "SELECT response FROM incoming_dedup WHERE webhook_id = $1 AND dedup_key = $2",
                &[webhook_id, key],
            )
            .await?;
        text.map(|(t,)| from_json("response", &t)).transpose()
    }

    /// The position of message `id` in an agent's inbox; `None` if the inbox holds no such
    /// message.
    pub async fn inbox_position(&self, agent_id: &str, id: &str) -> Result<Option<InboxPosition>> {
        let seq: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT seq FROM agent_messages WHERE agent_id = $1 AND id = $2",
        )
        .bind(agent_id)
        .bind(id)
        .fetch_optional(pool)
        .await?);
        Ok(seq.map(InboxPosition))
    }

    /// Up to `limit` of an agent's messages after `after` (from the start: `None`), in commit
    /// order, and no more than [`PAGE_CONTENT`] of content, but always one.
    ///
    /// A message holds up to a whole incoming body (1 MiB), and anyone who knows a receiving
    /// URL can fill an inbox: a page of 1,000 was a gigabyte held at once, three times over
    /// while answered. The page is cut by the sizes first (read without the contents), then
    /// only what fits is read.
    pub async fn list_messages(
        &self,
        agent_id: &str,
        after: Option<InboxPosition>,
        limit: i64,
    ) -> Result<InboxPage> {
        let after = after.map_or(i64::MIN, |position| position.0);
        let sizes: Vec<(i64, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT seq, CAST(length(content) AS BIGINT) FROM agent_messages WHERE agent_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(agent_id)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?);
        let Some(through) = last_within(&sizes, PAGE_CONTENT) else {
            return Ok(InboxPage {
                messages: Vec::new(),
                last: None,
            });
        };
        let rows: Vec<MessageRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT seq, id, agent_id, user_id, company_id, incoming_webhook_id, kind, content,
                created_at
             FROM agent_messages WHERE agent_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(agent_id)
        .bind(after)
        .bind(through)
        .fetch_all(pool)
        .await?);
        let last = rows.last().map(|row| InboxPosition(row.seq));
        Ok(InboxPage {
            messages: rows
                .into_iter()
                .map(AgentMessage::try_from)
                .collect::<Result<_>>()?,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::last_within;

    #[test]
    fn a_page_is_cut_at_its_budget_but_holds_at_least_one() {
        let sizes = [(1, 40), (2, 50), (3, 20), (4, 1)];
        assert_eq!(last_within(&sizes, 100), Some(2));
        assert_eq!(last_within(&sizes, 110), Some(3));
        assert_eq!(last_within(&sizes, 1_000), Some(4));
        assert_eq!(
            last_within(&sizes, 10),
            Some(1),
            "an oversized first comes alone"
        );
        assert_eq!(last_within(&[], 10), None);
    }
}
