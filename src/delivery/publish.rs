//! Publishing: match an event against the company's webhooks and store it with its deliveries
//! in one transaction, then wake the workers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{
    domain::{
        delivery::{Delivery, TargetKind},
        event::{Event, NewEvent},
        new_id,
        outgoing::OutgoingWebhook,
        tenant::Tenant,
        time::now_ms,
    },
    store::{Idempotency, Publication, Store, StoreError},
};

/// What a publish produced: per event, its id and how many deliveries it fanned out to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub events: Vec<PublishedEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEvent {
    pub event_id: String,
    pub deliveries: usize,
}

/// A company's active webhooks and the company version they were read at.
type Candidates = (i64, Arc<Vec<OutgoingWebhook>>);

/// Publishes events for a tenant; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Store,
    wake: Arc<Notify>,
    /// Each company's active webhooks, with the company version they were read at.
    candidates: Arc<Mutex<HashMap<String, Candidates>>>,
}

impl Publisher {
    pub fn new(store: Store, wake: Arc<Notify>) -> Publisher {
        Publisher {
            store,
            wake,
            candidates: Arc::default(),
        }
    }

    /// The company's active webhooks: from the cache while the company's version is unchanged
    /// (one primary-key read), else read afresh. Another node's change moves the version too.
    async fn candidates(&self, company_id: &str) -> Result<Arc<Vec<OutgoingWebhook>>, StoreError> {
        let version = self.store.company_version(company_id).await?;
        if let Some((cached, hooks)) = self.candidates.lock().expect("cache lock").get(company_id)
            && *cached == version
        {
            return Ok(Arc::clone(hooks));
        }
        let hooks = Arc::new(self.store.active_outgoing_for_company(company_id).await?);
        self.candidates
            .lock()
            .expect("cache lock")
            .insert(company_id.to_string(), (version, Arc::clone(&hooks)));
        Ok(hooks)
    }

    /// Matches `events` (already validated) against the company's webhooks: the events and
    /// deliveries to write, and what to answer. Nothing is written yet, so the caller can write
    /// them in the same transaction as what caused them.
    pub async fn prepare(
        &self,
        tenant: &Tenant,
        events: Vec<NewEvent>,
    ) -> Result<(Publication, Published), StoreError> {
        let hooks = self.candidates(&tenant.company_id).await?;
        let now = now_ms();
        let mut stored = Vec::with_capacity(events.len());
        let mut deliveries = Vec::new();
        let mut published = Published {
            events: Vec::with_capacity(events.len()),
        };
        for new in events {
            let event = Event::new(new_id(), tenant.clone(), new, now);
            let before = deliveries.len();
            deliveries.extend(
                hooks
                    .iter()
                    .filter(|hook| event.is_wanted_by(&hook.settings))
                    .map(|hook| Delivery::pending(&event, TargetKind::Webhook, &hook.id, now)),
            );
            published.events.push(PublishedEvent {
                event_id: event.id.clone(),
                deliveries: deliveries.len() - before,
            });
            stored.push(event);
        }
        let publication = Publication {
            tenant: tenant.clone(),
            events: stored,
            deliveries,
            idempotency: None,
        };
        Ok((publication, published))
    }

    /// Stores `events` (already validated) and their deliveries. With an idempotency key, a
    /// repeated call answers what the first one did and writes nothing.
    pub async fn publish(
        &self,
        tenant: &Tenant,
        events: Vec<NewEvent>,
        idempotency_key: Option<&str>,
    ) -> Result<Published, StoreError> {
        if let Some(key) = idempotency_key
            && let Some(earlier) = self.remembered(tenant, key).await?
        {
            return Ok(earlier);
        }
        let (mut publication, published) = self.prepare(tenant, events).await?;
        publication.idempotency = idempotency_key.map(|key| Idempotency {
            key: key.to_string(),
            response: serde_json::to_string(&published).unwrap_or_default(),
        });
        let fanned_out = !publication.deliveries.is_empty();
        match (self.store.publish(publication).await, idempotency_key) {
            (Ok(()), _) => {}
            // A concurrent publish with the same key won the race: answer what it answered.
            (Err(StoreError::Conflict(_)), Some(key)) => {
                return self
                    .remembered(tenant, key)
                    .await?
                    .ok_or(StoreError::NotFound);
            }
            (Err(error), _) => return Err(error),
        }
        if fanned_out {
            self.wake.notify_one();
        }
        Ok(published)
    }

    /// Tells the workers there is work now (e.g. a replayed delivery).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn remembered(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<Published>, StoreError> {
        self.store
            .idempotent_response(tenant, key)
            .await?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("idempotency response: {e}")))
            })
            .transpose()
    }
}
