//! Notices about webhooks, kept as an outbox: each is written in the transaction that changes its
//! webhook (an attempt's group commit, a settings update), and deleted in the transaction that
//! publishes it as an event with its deliveries. A node that dies in between leaves the notice
//! for the next sweep; two nodes sweeping the same notice publish it once (the delete decides).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    Publication, Result, Store, StoreError,
    deliveries::{AttemptRecord, HealthFold},
    from_json, on_pool, on_writer,
};
use crate::domain::{
    delivery::{DeliveryStatus, TargetKind},
    notice::{About, FailedDelivery, Notice, announces_failure_of},
    tenant::Tenant,
    time::now_ms,
};

/// A webhook as a transaction found it before changing it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct FoundRow {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) company_id: String,
    pub(super) name: String,
    pub(super) is_active: bool,
    pub(super) consecutive_failures: i64,
    pub(super) circuit_open_until: Option<i64>,
}

#[derive(Debug)]
pub(super) struct Found {
    tenant: Tenant,
    name: String,
    is_active: bool,
    consecutive_failures: i64,
    circuit_open_until: Option<i64>,
}

impl FoundRow {
    pub(super) fn into_entry(self) -> (String, Found) {
        (
            self.id,
            Found {
                tenant: Tenant {
                    user_id: self.user_id,
                    company_id: self.company_id,
                },
                name: self.name,
                is_active: self.is_active,
                consecutive_failures: self.consecutive_failures,
                circuit_open_until: self.circuit_open_until,
            },
        )
    }

    /// From a rusqlite row of [`FOUND_COLUMNS`].
    pub(super) fn from_sqlite(row: &rusqlite::Row) -> rusqlite::Result<FoundRow> {
        Ok(FoundRow {
            id: row.get(0)?,
            user_id: row.get(1)?,
            company_id: row.get(2)?,
            name: row.get(3)?,
            is_active: row.get(4)?,
            consecutive_failures: row.get(5)?,
            circuit_open_until: row.get(6)?,
        })
    }
}

impl Found {
    fn about<'a>(&'a self, id: &'a str, consecutive_failures: i64) -> About<'a> {
        About {
            tenant: &self.tenant,
            webhook_id: id,
            webhook_name: &self.name,
            consecutive_failures,
        }
    }
}

/// The columns of a webhook a group reads before changing its health, in [`FoundRow`]'s order.
pub(super) const FOUND_COLUMNS: &str =
    "id, user_id, company_id, name, is_active, consecutive_failures, circuit_open_until";

/// The columns a notice is inserted with, in the order of its bind values.
pub(super) const NOTICE_COLUMNS: &str =
    "id, user_id, company_id, webhook_id, event_type, data, created_at";

/// Inserts `$notices` (a slice of `Notice`) on `$conn`.
macro_rules! insert_notices {
    ($conn:expr, $notices:expr) => {{
        let notices: &[crate::domain::notice::Notice] = $notices;
        for chunk in notices.chunks(crate::store::events::CHUNK) {
            sqlx::QueryBuilder::new(format!(
                "INSERT INTO webhook_notices ({}) ",
                crate::store::notices::NOTICE_COLUMNS
            ))
            .push_values(chunk, |mut row, notice| {
                row.push_bind(&notice.id)
                    .push_bind(&notice.tenant.user_id)
                    .push_bind(&notice.tenant.company_id)
                    .push_bind(&notice.webhook_id)
                    .push_bind(&notice.event_type)
                    .push_bind(crate::store::to_json(&notice.data))
                    .push_bind(notice.created_at);
            })
            .build()
            .execute(&mut *$conn)
            .await?;
        }
    }};
}
pub(super) use insert_notices;

/// What a group's attempts teach about each target (a group commit's plan holds it).
pub(super) type HealthChanges<'a> = BTreeMap<(TargetKind, &'a str), HealthFold>;

/// The webhooks whose health a group changes (the ones [`read_found`] reads), in id order, each
/// with whether the group only resets it (successes only).
pub(super) fn webhooks_of<'a>(health: &HealthChanges<'a>) -> Vec<(&'a str, bool)> {
    health
        .iter()
        .filter(|((target, _), _)| *target == TargetKind::Webhook)
        .map(|((_, id), fold)| (*id, fold.only_resets()))
        .collect()
}

/// Whether the health fold of `target` is written: not for a webhook the group only resets and
/// [`read_found`] skipped as clean. (Resetting it anyway could, on PostgreSQL, close a circuit
/// that another node opened after the read without announcing it; the circuit's own trial
/// closes it then.)
pub(super) fn health_written(
    (target, id): (TargetKind, &str),
    fold: &HealthFold,
    found: &HashMap<String, Found>,
) -> bool {
    target != TargetKind::Webhook || !fold.only_resets() || found.contains_key(id)
}

/// What a group's attempts change about their webhooks that is announced: a circuit that opens
/// or closes, a webhook switched off by a 410, a delivery that spent its retries (unless it
/// carried an announcement itself: see [`announces_failure_of`]). `found`: the webhooks as the
/// group found them; one deleted meanwhile is not announced. `arrived`: the group's attempts in
/// the order they arrived.
pub(super) fn of_attempts(
    arrived: &[&AttemptRecord],
    health: &HealthChanges,
    held: &HashSet<String>,
    found: &HashMap<String, Found>,
) -> Vec<Notice> {
    let now = now_ms();
    let mut notices = Vec::new();
    for ((target, id), fold) in health {
        let (TargetKind::Webhook, Some(before)) = (target, found.get(*id)) else {
            continue;
        };
        let about = before.about(id, fold.failures_after(before.consecutive_failures));
        if let (Some(reason), true) = (fold.gone(), before.is_active) {
            notices.push(about.disabled(reason, now));
        }
        let tripped_before = before.circuit_open_until.is_some();
        let tripped_after =
            fold.tripped_after(before.consecutive_failures, before.circuit_open_until);
        match (tripped_before, tripped_after) {
            (false, true) => {
                let (threshold, open_until) = fold.opening();
                let reason = last_failure(arrived, id).unwrap_or("consecutive failures");
                notices.push(about.circuit_opened(reason, threshold, open_until, now));
            }
            (true, false) => {
                notices.push(about.circuit_closed(before.consecutive_failures, now));
            }
            _ => {}
        }
    }
    let mut by_delivery = arrived.to_vec();
    by_delivery.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    for record in by_delivery {
        let failed_for_good = record.status == DeliveryStatus::Failed
            && record.target == TargetKind::Webhook
            && !matches!(record.health, super::HealthChange::Gone { .. })
            && held.contains(&record.delivery_id)
            && announces_failure_of(&record.event_type);
        let Some(before) = found.get(&record.webhook_id).filter(|_| failed_for_good) else {
            continue;
        };
        let fold = &health[&(TargetKind::Webhook, record.webhook_id.as_str())];
        let about = before.about(
            &record.webhook_id,
            fold.failures_after(before.consecutive_failures),
        );
        let failed = FailedDelivery {
            delivery_id: &record.delivery_id,
            event_id: &record.event_id,
            event_type: &record.event_type,
            attempts: record.attempts,
            last_status: record.last_status,
            reason: record.last_error.as_deref().unwrap_or("failed"),
        };
        notices.push(about.delivery_failed(&failed, now));
    }
    notices
}

/// Why the last failed attempt of the group to webhook `id` failed.
fn last_failure<'a>(arrived: &[&'a AttemptRecord], id: &str) -> Option<&'a str> {
    arrived
        .iter()
        .rev()
        .find(|record| {
            record.webhook_id == id && matches!(record.health, super::HealthChange::Failure { .. })
        })
        .and_then(|record| record.last_error.as_deref())
}

#[derive(sqlx::FromRow)]
struct NoticeRow {
    id: String,
    user_id: String,
    company_id: String,
    webhook_id: String,
    event_type: String,
    data: String,
    created_at: i64,
}

impl TryFrom<NoticeRow> for Notice {
    type Error = StoreError;

    fn try_from(row: NoticeRow) -> Result<Notice> {
        Ok(Notice {
            data: from_json("data", &row.data)?,
            id: row.id,
            tenant: Tenant {
                user_id: row.user_id,
                company_id: row.company_id,
            },
            webhook_id: row.webhook_id,
            event_type: row.event_type,
            created_at: row.created_at,
        })
    }
}

impl Store {
    /// Up to `limit` notices not yet published, oldest first.
    pub async fn pending_notices(&self, limit: i64) -> Result<Vec<Notice>> {
        let sql = format!(
            "SELECT {NOTICE_COLUMNS} FROM webhook_notices ORDER BY created_at, id LIMIT $1"
        );
        let rows: Vec<NoticeRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(Notice::try_from).collect()
    }

    /// Publishes notice `id` as `publication` (its event and deliveries) and deletes it, in one
    /// transaction. `false`: it was published already (by another node), and nothing is
    /// written.
    pub async fn publish_notice(&self, id: &str, publication: Publication) -> Result<bool> {
        on_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM webhook_notices WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            super::events::insert_publication!(tx, &publication);
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Resolves when a transaction of this node wrote notices (or at once, if one did since the
    /// last call): the publisher of notices sweeps then.
    pub async fn notices_written(&self) {
        self.noticed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        domain::{
            delivery::{Delivery, Health},
            event::{Event, NewEvent},
            log::{LogEntry, LoggedHeaders, WebhookType},
            outgoing::{OutgoingChanges, OutgoingSettings, OutgoingWebhook},
        },
        store::{AttemptRecord, HealthChange},
    };

    fn tenant() -> Tenant {
        Tenant {
            user_id: "u".into(),
            company_id: "c".into(),
        }
    }

    async fn store_with_webhook(dir: &tempfile::TempDir) -> (Store, OutgoingWebhook) {
        let url = format!("sqlite://{}", dir.path().join("hookd.db").display());
        let store = Store::connect(&url).await.expect("store");
        let settings = OutgoingSettings::create(OutgoingChanges {
            name: Some("crm".into()),
            url: Some("https://example.com/hook".into()),
            ..Default::default()
        })
        .unwrap();
        let hook = OutgoingWebhook {
            id: "w1".into(),
            tenant: tenant(),
            settings,
            health: Health::default(),
            previous_secret: None,
            created_at: 1,
            updated_at: 1,
        };
        store.insert_outgoing(&hook, 10).await.expect("webhook");
        (store, hook)
    }

    /// Successes to a webhook found clean are neither read back (nor, on PostgreSQL, locked) nor
    /// written: groups of several nodes delivering to one busy webhook do not wait on its row.
    #[test]
    fn a_group_only_resetting_a_clean_webhook_leaves_its_row_alone() {
        let mut successes = HealthFold::default();
        successes.add(HealthChange::Success);
        let mut failure = HealthFold::default();
        failure.add(HealthChange::Failure {
            threshold: 5,
            open_until: 10,
        });
        assert!(successes.only_resets() && !failure.only_resets());
        let dirty = Found {
            tenant: tenant(),
            name: "crm".into(),
            is_active: true,
            consecutive_failures: 2,
            circuit_open_until: None,
        };
        let found = HashMap::from([("dirty".to_string(), dirty)]);
        let hook = |id| (TargetKind::Webhook, id);
        assert!(!health_written(hook("clean"), &successes, &found));
        assert!(health_written(hook("dirty"), &successes, &found));
        assert!(health_written(hook("clean"), &failure, &found));
        assert!(health_written(
            (TargetKind::Agent, "agent"),
            &successes,
            &found
        ));
    }

    /// A failed attempt, its retries spent, that trips a circuit whose threshold is 1.
    fn last_attempt(delivery: &Delivery) -> AttemptRecord {
        let log = LogEntry {
            id: crate::domain::new_id(),
            webhook_type: WebhookType::Outgoing,
            webhook_id: delivery.webhook_id.clone(),
            delivery_id: Some(delivery.id.clone()),
            event_type: Some(delivery.event_type.clone()),
            status: "failed".into(),
            succeeded: false,
            request_payload: None,
            request_headers: LoggedHeaders::default(),
            response_status: Some(500),
            response_body: None,
            error_message: Some("target answered HTTP 500".into()),
            retry_count: 0,
            processing_time_us: 1_000,
            created_at: 2,
        };
        AttemptRecord {
            delivery_id: delivery.id.clone(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            target: TargetKind::Webhook,
            webhook_id: delivery.webhook_id.clone(),
            lease_token: "lease".into(),
            status: DeliveryStatus::Failed,
            attempts: 1,
            next_attempt_at: 2,
            last_status: Some(500),
            last_error: Some("target answered HTTP 500".into()),
            now: 2,
            log,
            health: HealthChange::Failure {
                threshold: 1,
                open_until: 60_000,
            },
            reply: None,
        }
    }

    /// The notices are in the store as soon as the change is (no publisher runs here), and a
    /// notice is published once.
    #[tokio::test]
    async fn notices_are_written_with_their_change_and_published_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, mut hook) = store_with_webhook(&dir).await;
        let new = NewEvent {
            event_type: "task.failed".into(),
            data: serde_json::json!({}),
            ..Default::default()
        };
        let event = Event::new("e1".into(), tenant(), new, 1);
        let delivery = Delivery {
            lease_token: Some("lease".into()),
            ..Delivery::pending(&event, TargetKind::Webhook, "w1", 1)
        };
        let publication = Publication {
            tenant: tenant(),
            events: vec![Arc::new(event)],
            deliveries: vec![delivery.clone()],
            idempotency: None,
        };
        store.publish(publication).await.expect("publish");
        assert!(store.record_attempt(last_attempt(&delivery)).await.unwrap());
        let notices = store.pending_notices(10).await.unwrap();
        let mut types: Vec<&str> = notices.iter().map(|n| n.event_type.as_str()).collect();
        types.sort_unstable();
        assert_eq!(types, ["webhook.circuit_opened", "webhook.delivery_failed"]);
        assert!(notices.iter().all(|n| n.webhook_id == "w1"));

        hook.settings.is_active = false;
        store.update_outgoing(&hook).await.unwrap();
        store.update_outgoing(&hook).await.unwrap();
        let notices = store.pending_notices(10).await.unwrap();
        assert_eq!(notices.len(), 3, "switched off once");
        let disabled = notices
            .iter()
            .find(|n| n.event_type == "webhook.disabled")
            .unwrap();

        let empty = || Publication {
            tenant: tenant(),
            events: Vec::new(),
            deliveries: Vec::new(),
            idempotency: None,
        };
        assert!(store.publish_notice(&disabled.id, empty()).await.unwrap());
        assert!(!store.publish_notice(&disabled.id, empty()).await.unwrap());
        assert_eq!(store.pending_notices(10).await.unwrap().len(), 2);
    }
}
