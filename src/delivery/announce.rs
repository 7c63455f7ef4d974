//! Announcements about webhooks: the notices that changes to webhooks leave in the store (see
//! `store::notices`) are published as ordinary events through the [`Publisher`], to the tenant's
//! webhooks subscribed to them, except the webhook each is about.

use std::time::Duration;

use tokio::sync::watch;

use super::publish::Publisher;
use crate::{
    domain::notice::Notice,
    store::{Store, StoreError},
};

/// How often the store is swept when no write of this node wrote a notice: picks up what a node
/// that died between writing and publishing (or another node's change) left.
const SWEEP: Duration = Duration::from_secs(10);
/// Notices published per read.
const BATCH: usize = 100;

/// Publishes notices as they are written (and whatever is left from before) until `stop`.
pub async fn run(store: Store, publisher: Publisher, mut stop: watch::Receiver<bool>) {
    loop {
        announce(&store, &publisher).await;
        tokio::select! {
            () = store.notices_written() => {}
            () = tokio::time::sleep(SWEEP) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
        }
    }
}

/// Publishes every notice waiting, oldest first. One that fails stays for the next sweep.
pub async fn announce(store: &Store, publisher: &Publisher) {
    loop {
        let notices = match store.pending_notices(BATCH as i64).await {
            Ok(notices) => notices,
            Err(error) => {
                tracing::warn!(%error, "reading notices about webhooks failed; retrying later");
                return;
            }
        };
        let read = notices.len();
        for notice in notices {
            if let Err(error) = publish(store, publisher, &notice).await {
                tracing::warn!(notice = %notice.id, webhook = %notice.webhook_id, %error,
                    "publishing a notice about a webhook failed; retrying later");
                return;
            }
        }
        if read < BATCH {
            return;
        }
    }
}

async fn publish(store: &Store, publisher: &Publisher, notice: &Notice) -> Result<(), StoreError> {
    let (mut publication, _) = publisher
        .prepare(&notice.tenant, vec![notice.event()])
        .await?;
    // Never to the webhook it is about: it may be failing, and is told nothing about itself.
    publication
        .deliveries
        .retain(|delivery| delivery.webhook_id != notice.webhook_id);
    publisher
        .commit(publication, |publication| {
            store.publish_notice(&notice.id, publication)
        })
        .await?;
    Ok(())
}
