//! Publishing: match an event against the company's webhooks and store it with its deliveries
//! in one transaction, then wake the workers.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{
    catalogue::{Catalogue, CatalogueError},
    handoff::Handoff,
};
use crate::{
    domain::{
        delivery::{Delivery, TargetKind},
        event::{Event, NewEvent},
        new_id,
        outgoing::{Ordering, Subscription},
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
type Candidates = (i64, Arc<Subscriptions>);

/// A company's active webhooks indexed by the event types they subscribe to, so that matching an
/// event looks only at the webhooks that could want it, however many others the company has.
pub struct Subscriptions {
    hooks: Vec<Subscription>,
    /// Exact types → positions in `hooks`.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard prefixes with their dot (`chat.` for `chat.*`) → positions.
    prefixed: HashMap<String, Vec<usize>>,
    /// Subscribed to everything (`*`).
    all: Vec<usize>,
}

impl Subscriptions {
    pub fn new(hooks: Vec<Subscription>) -> Subscriptions {
        let mut index = Subscriptions {
            exact: HashMap::new(),
            prefixed: HashMap::new(),
            all: Vec::new(),
            hooks: Vec::new(),
        };
        for (position, hook) in hooks.iter().enumerate() {
            for pattern in &hook.event_types {
                match pattern.strip_suffix('*') {
                    Some("") => index.all.push(position),
                    Some(prefix) => index
                        .prefixed
                        .entry(prefix.to_string())
                        .or_default()
                        .push(position),
                    None => index
                        .exact
                        .entry(pattern.clone())
                        .or_default()
                        .push(position),
                }
            }
        }
        index.hooks = hooks;
        index
    }

    /// The webhooks that want `event` (type and filters), in the order they were given.
    pub fn wanting<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = &'a Subscription> {
        self.subscribed(&event.event_type)
            .into_iter()
            .map(|position| &self.hooks[position])
            .filter(|hook| hook.wants(event))
    }

    /// How many webhooks subscribe to `event_type`, before their filters: at least as many as
    /// an event of that type is delivered to.
    pub fn subscribers(&self, event_type: &str) -> usize {
        self.subscribed(event_type).len()
    }

    /// The positions of the webhooks subscribed to `event_type`, in order, each once.
    fn subscribed(&self, event_type: &str) -> Vec<usize> {
        let prefixes = event_type
            .match_indices('.')
            .filter_map(|(dot, _)| self.prefixed.get(&event_type[..=dot]));
        let mut positions: Vec<usize> = self
            .exact
            .get(event_type)
            .into_iter()
            .chain(prefixes)
            .chain(std::iter::once(&self.all))
            .flatten()
            .copied()
            .collect();
        // A webhook with several matching patterns is listed once.
        positions.sort_unstable();
        positions.dedup();
        positions
    }
}

/// `events` (already validated) as `tenant` publishes them to `hooks`: the events and their
/// deliveries, and what to answer.
fn fan_out(
    hooks: &Subscriptions,
    tenant: &Tenant,
    events: Vec<NewEvent>,
) -> (Publication, Published) {
    let now = now_ms();
    let mut stored = Vec::with_capacity(events.len());
    let mut deliveries = Vec::new();
    let mut published = Published {
        events: Vec::with_capacity(events.len()),
    };
    for new in events {
        let event = Event::new(new_id(), tenant.clone(), new, now);
        let before = deliveries.len();
        deliveries.extend(hooks.wanting(&event).map(|hook| Delivery {
            fifo: hook.ordering == Ordering::Fifo,
            ..Delivery::pending(&event, TargetKind::Webhook, &hook.webhook_id, now)
        }));
        published.events.push(PublishedEvent {
            event_id: event.id.clone(),
            deliveries: deliveries.len() - before,
        });
        stored.push(Arc::new(event));
    }
    let publication = Publication {
        tenant: tenant.clone(),
        events: stored,
        deliveries,
        idempotency: None,
    };
    (publication, published)
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `Idempotency-Key` was first used with a different request.
    #[error(
        "Idempotency-Key: this key was used with a different request; use a new key for a new request"
    )]
    KeyReused,
    /// The request's events would make more deliveries than one request may (see
    /// [`crate::domain::quota::Quotas::deliveries_per_request`]).
    #[error(
        "the webhooks subscribed to these events' types number {subscribed} in all (per event, \
         before filters); one request may make at most {most} deliveries \
         (HOOKD_MAX_DELIVERIES_PER_REQUEST): publish fewer events per request"
    )]
    TooManyDeliveries { subscribed: usize, most: usize },
    /// The events' types or data were refused, or could not be checked now.
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
}

/// Who publishes: the tenant, and its company's webhook version if the caller has just read
/// it (with the API key: see [`crate::store::KeyHolder`]), which saves the publish a read.
#[derive(Clone, Copy)]
pub struct Publishing<'a> {
    pub tenant: &'a Tenant,
    pub company_version: Option<i64>,
}

/// Publishes events for a tenant; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Store,
    wake: Arc<Notify>,
    handoff: Handoff,
    /// Each company's active webhooks, with the company version they were read at.
    candidates: Arc<Mutex<HashMap<String, Candidates>>>,
    /// Held while a company's webhooks are read afresh, so that the publishes arriving just
    /// after a change wait for one read instead of each reading every webhook (with 10,000
    /// webhooks, 64 concurrent reads starved the store's connections for seconds).
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// Deliveries one publish request may make.
    most_deliveries: usize,
}

impl Publisher {
    pub fn new(
        store: Store,
        wake: Arc<Notify>,
        handoff: Handoff,
        most_deliveries: usize,
    ) -> Publisher {
        Publisher {
            store,
            wake,
            handoff,
            candidates: Arc::default(),
            reloading: Arc::default(),
            most_deliveries,
        }
    }

    /// The company's active webhooks: from the cache while the company's version is unchanged
    /// (one primary-key read, unless the caller read `version` already), else read afresh.
    /// Another node's change moves the version too.
    async fn candidates(
        &self,
        company_id: &str,
        version: Option<i64>,
    ) -> Result<Arc<Subscriptions>, StoreError> {
        let version = match version {
            Some(version) => version,
            None => self.store.company_version(company_id).await?,
        };
        let cached = || {
            let cache = self.candidates.lock().expect("cache lock");
            let (at, hooks) = cache.get(company_id)?;
            (*at == version).then(|| Arc::clone(hooks))
        };
        if let Some(hooks) = cached() {
            return Ok(hooks);
        }
        let _reloading = self.reloading.lock().await;
        // Whoever held the lock before may have read this version already.
        if let Some(hooks) = cached() {
            return Ok(hooks);
        }
        let hooks = Arc::new(Subscriptions::new(
            self.store.active_subscriptions(company_id).await?,
        ));
        self.candidates
            .lock()
            .expect("cache lock")
            .insert(company_id.to_string(), (version, Arc::clone(&hooks)));
        Ok(hooks)
    }

    /// Matches `events` (already validated) against the company's webhooks: the events and
    /// deliveries to write, and what to answer. Nothing is written or leased yet: the caller may
    /// add to it, then hands it to [`Publisher::commit`] with what caused it.
    pub async fn prepare(
        &self,
        tenant: &Tenant,
        events: Vec<NewEvent>,
    ) -> Result<(Publication, Published), StoreError> {
        self.prepare_at(tenant, None, events).await
    }

    /// [`Publisher::prepare`] for a caller that has just read the company's webhook version
    /// (see [`crate::store::Addressed`]).
    pub async fn prepare_at(
        &self,
        tenant: &Tenant,
        company_version: Option<i64>,
        events: Vec<NewEvent>,
    ) -> Result<(Publication, Published), StoreError> {
        let hooks = self.candidates(&tenant.company_id, company_version).await?;
        Ok(fan_out(&hooks, tenant, events))
    }

    /// A request to publish `events` (each valid on its own), as every way in makes it (the API,
    /// a NATS source): answered what the first publish with `key` answered, if there was one,
    /// even where the checks would now refuse it (its type archived since); else checked against
    /// the company's types (`field(i)` prefixes the field names of the `i`th) and published.
    pub async fn publish_request(
        &self,
        catalogue: &Catalogue,
        publisher: Publishing<'_>,
        events: Vec<NewEvent>,
        key: Option<&str>,
        field: impl Fn(usize) -> String + Send + 'static,
    ) -> Result<Published, PublishError> {
        let tenant = publisher.tenant;
        if let Some(earlier) = self.earlier_answer(tenant, &events, key).await? {
            return Ok(earlier);
        }
        let events = catalogue
            .check_events(&tenant.company_id, events, field)
            .await?;
        self.publish(publisher, events, key).await
    }

    /// Stores `events` (already validated) and their deliveries. With an idempotency key, the
    /// caller has asked [`earlier_answer`](Self::earlier_answer) first (before its own checks);
    /// a concurrent publish that took the key meanwhile is answered here from the conflict: what
    /// the first one answered, or [`PublishError::KeyReused`] for other events, as Stripe and
    /// the IETF draft do.
    pub async fn publish(
        &self,
        publisher: Publishing<'_>,
        events: Vec<NewEvent>,
        idempotency_key: Option<&str>,
    ) -> Result<Published, PublishError> {
        let Publishing {
            tenant,
            company_version,
        } = publisher;
        let remembered = idempotency_key.map(|key| (key, request_hash(&events)));
        let hooks = self.candidates(&tenant.company_id, company_version).await?;
        // Counted before anything is built: a refused request costs no more than its count.
        let subscribed = events
            .iter()
            .map(|e| hooks.subscribers(&e.event_type))
            .sum();
        if subscribed > self.most_deliveries {
            let most = self.most_deliveries;
            return Err(PublishError::TooManyDeliveries { subscribed, most });
        }
        let (mut publication, published) = fan_out(&hooks, tenant, events);
        publication.idempotency = remembered.as_ref().map(|(key, request_hash)| Idempotency {
            key: key.to_string(),
            response: serde_json::to_string(&published).unwrap_or_default(),
            request_hash: request_hash.clone(),
        });
        let written = self.commit(publication, |publication| self.store.publish(publication));
        match (written.await, remembered) {
            (Ok(_), _) => Ok(published),
            // A concurrent publish with the same key won the race: answer what it answered.
            (Err(StoreError::Conflict(_)), Some((key, request_hash))) => self
                .remembered(tenant, key, &request_hash)
                .await?
                .ok_or(PublishError::Store(StoreError::NotFound)),
            (Err(error), _) => Err(error.into()),
        }
    }

    /// Writes `publication` with whatever `write` stores beside it in the same transaction (an
    /// accepted message, an attempt's outcome, an agent's change), and once that is durable
    /// starts its deliveries: the one way a publication reaches the store. `write` gets the
    /// publication with as many deliveries leased to this node as its worker has room for (see
    /// [`handoff`](super::handoff)); if it fails or answers `false` (it wrote nothing: a
    /// duplicate, a lost lease), they are not started and their slots are freed.
    pub async fn commit<W, F>(
        &self,
        mut publication: Publication,
        write: W,
    ) -> Result<bool, StoreError>
    where
        W: FnOnce(Publication) -> F,
        F: Future<Output = Result<bool, StoreError>>,
    {
        let leased = self.handoff.lease(&mut publication, now_ms());
        let written = write(publication).await?;
        if written {
            leased.start();
        }
        Ok(written)
    }

    /// Tells the workers there is work now (e.g. a replayed delivery).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What the first publish with `key` answered, if there was one; an error if it was made
    /// with another request than the one hashed to `request_hash`.
    /// What a publish of `events` under `idempotency_key` answered before, if it did: asked
    /// before anything else, so that a retry gets the first answer even where checks would now
    /// refuse it (an event type archived since). The same key with other events is
    /// [`PublishError::KeyReused`].
    pub async fn earlier_answer(
        &self,
        tenant: &Tenant,
        events: &[NewEvent],
        idempotency_key: Option<&str>,
    ) -> Result<Option<Published>, PublishError> {
        match idempotency_key {
            Some(key) => self.remembered(tenant, key, &request_hash(events)).await,
            None => Ok(None),
        }
    }

    async fn remembered(
        &self,
        tenant: &Tenant,
        key: &str,
        request_hash: &str,
    ) -> Result<Option<Published>, PublishError> {
        let Some((response, first_hash)) = self.store.idempotent_response(tenant, key).await?
        else {
            return Ok(None);
        };
        if first_hash.is_some_and(|first| first != request_hash) {
            return Err(PublishError::KeyReused);
        }
        serde_json::from_str(&response)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("idempotency response: {e}")).into())
    }
}

/// The fingerprint of a publish's events that an idempotency key is remembered with.
fn request_hash(events: &[NewEvent]) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(events).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{
        delivery::Health,
        outgoing::{OutgoingChanges, OutgoingSettings, OutgoingWebhook},
    };

    fn hook(id: &str, event_types: &[&str], filters: Option<serde_json::Value>) -> OutgoingWebhook {
        let settings = OutgoingSettings::create(OutgoingChanges {
            name: Some(id.into()),
            url: Some("https://example.com/hook".into()),
            event_types: Some(event_types.iter().map(|t| t.to_string()).collect()),
            filters: filters.map(|f| f.as_object().cloned().unwrap()),
            ..Default::default()
        })
        .unwrap();
        OutgoingWebhook {
            id: id.into(),
            tenant: Tenant {
                user_id: "u".into(),
                company_id: "c".into(),
            },
            settings,
            health: Health::default(),
            previous_secret: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn the_index_finds_exactly_what_a_scan_would() {
        let hooks = [
            hook("exact", &["chat.completed"], None),
            hook("prefix", &["chat.*"], None),
            hook("deeper", &["chat.message.*"], None),
            hook("all", &["*"], None),
            hook("twice", &["chat.*", "chat.completed"], None),
            hook("other", &["task.failed"], None),
            hook("filtered", &["chat.*"], Some(json!({"data.agent": "a"}))),
        ];
        let subscriptions = hooks.iter().map(|hook| Subscription {
            webhook_id: hook.id.clone(),
            event_types: hook.settings.event_types.clone(),
            filters: hook.settings.filters.clone(),
            ordering: hook.settings.ordering,
        });
        let index = Subscriptions::new(subscriptions.collect());
        for (event_type, data) in [
            ("chat.completed", json!({})),
            ("chat.completed", json!({"agent": "a"})),
            ("chat.message.received", json!({})),
            ("task.failed", json!({})),
            ("agent.created", json!({})),
        ] {
            let event = Event::sample(event_type, data);
            let found: Vec<_> = index
                .wanting(&event)
                .map(|h| h.webhook_id.as_str())
                .collect();
            let scanned: Vec<_> = hooks
                .iter()
                .filter(|h| h.settings.wants(&event))
                .map(|h| h.id.as_str())
                .collect();
            assert_eq!(found, scanned, "{event_type}");
        }
    }
}
