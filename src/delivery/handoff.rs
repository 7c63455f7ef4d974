//! Hand-off: the deliveries a node publishes are leased to that node in the very write that
//! stores them, and start as soon as the write commits, without a claim (a write transaction of
//! its own on the store's one writer) and without reading their event back. Durability is
//! unchanged: an attempt starts only after its row is committed, and a lease that is never acted
//! on (the node died) expires like any claimed one. Only as many deliveries are leased as the
//! worker has free slots, each taking its slot with it, so a handed-off delivery starts at once
//! instead of waiting in memory while its lease runs down; the rest stay due and are claimed.
//!
//! Hand-off is for a worker with room to spare: it saves a few milliseconds of latency per
//! delivery, but each publish's deliveries then need their targets read on their own. Once half
//! the slots are taken, claims (which read the targets of up to 64 deliveries at once) do the
//! work for less (measured: fan-out ~6% faster without hand-off when the worker is saturated).

use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{
    domain::{delivery::Delivery, event::Event, new_id},
    store::Publication,
};

/// A delivery leased to this node at its publication, with the worker slot it runs in.
pub struct Handed {
    pub delivery: Delivery,
    pub event: Arc<Event>,
    pub token: Arc<str>,
    pub permit: OwnedSemaphorePermit,
}

/// Leases fresh deliveries to this node's worker; cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    /// Wakes the workers of this node for deliveries left to be claimed.
    wake: Arc<Notify>,
    /// `None` on a node that does not deliver.
    worker: Option<Arc<Line>>,
}

struct Line {
    slots: Arc<Semaphore>,
    /// Free slots kept for claims.
    reserve: usize,
    queue: mpsc::UnboundedSender<Handed>,
    lease_ms: i64,
}

impl Handoff {
    /// A hand-off to a worker with `slots` attempt slots, and the worker's end of it.
    pub fn new(
        wake: Arc<Notify>,
        slots: Arc<Semaphore>,
        lease_ms: i64,
    ) -> (Handoff, mpsc::UnboundedReceiver<Handed>) {
        let (queue, handed) = mpsc::unbounded_channel();
        let line = Line {
            reserve: slots.available_permits() / 2,
            slots,
            queue,
            lease_ms,
        };
        let handoff = Handoff {
            wake,
            worker: Some(Arc::new(line)),
        };
        (handoff, handed)
    }

    /// For a node without a worker: every delivery is left to be claimed.
    pub fn none(wake: Arc<Notify>) -> Handoff {
        Handoff { wake, worker: None }
    }

    /// Leases as many of `publication`'s deliveries to this node as its worker has free slots
    /// for beyond its reserve; [`Leased::start`] hands them over once the publication is
    /// committed.
    pub(super) fn lease(&self, publication: &mut Publication, now: i64) -> Leased {
        let lot = self
            .worker
            .as_ref()
            .and_then(|line| Lot::take(line, publication, now));
        let leased = lot.as_ref().map_or(0, |lot| lot.items.len());
        Leased {
            lot,
            unleased: publication.deliveries.len() - leased,
            wake: Arc::clone(&self.wake),
        }
    }
}

/// Deliveries leased by [`Handoff::lease`], waiting for their publication to commit. Dropped
/// unstarted (the write failed), it frees its slots.
pub(super) struct Leased {
    /// `None` when nothing was leased.
    lot: Option<Lot>,
    /// Deliveries of the publication left to be claimed.
    unleased: usize,
    wake: Arc<Notify>,
}

/// What one publication leased: its deliveries, their token and their slots.
struct Lot {
    items: Vec<(Delivery, Arc<Event>)>,
    token: Arc<str>,
    permits: OwnedSemaphorePermit,
    line: Arc<Line>,
}

impl Lot {
    /// Leases as many of `publication`'s deliveries as `line` has free slots for beyond its
    /// reserve; `None` if that is none.
    fn take(line: &Arc<Line>, publication: &mut Publication, now: i64) -> Option<Lot> {
        if line.queue.is_closed() {
            return None;
        }
        let wanted = publication
            .deliveries
            .len()
            .min(line.slots.available_permits().saturating_sub(line.reserve));
        let permits = u32::try_from(wanted)
            .ok()
            .filter(|wanted| *wanted > 0)
            .and_then(|wanted| Arc::clone(&line.slots).try_acquire_many_owned(wanted).ok())?;
        let token: Arc<str> = new_id().into();
        let mut items = Vec::with_capacity(wanted);
        for delivery in publication.deliveries.iter_mut().take(wanted) {
            let event = publication
                .events
                .iter()
                .find(|event| event.id == delivery.event_id);
            if let Some(event) = event {
                delivery.next_attempt_at = now + line.lease_ms;
                delivery.lease_token = Some(token.to_string());
                items.push((delivery.clone(), Arc::clone(event)));
            }
        }
        Some(Lot {
            items,
            token,
            permits,
            line: Arc::clone(line),
        })
    }
}

impl Leased {
    /// Starts the leased deliveries and wakes the workers for the others; call only once their
    /// publication is committed. A worker that has stopped meanwhile leaves its deliveries
    /// leased: they are made again when the lease ends (at once after a restart on SQLite).
    pub(super) fn start(self) {
        if self.unleased > 0 {
            self.wake.notify_one();
        }
        let Some(mut lot) = self.lot else {
            return;
        };
        for (delivery, event) in lot.items {
            let Some(permit) = lot.permits.split(1) else {
                return;
            };
            let handed = Handed {
                delivery,
                event,
                token: Arc::clone(&lot.token),
                permit,
            };
            if lot.line.queue.send(handed).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::delivery::TargetKind;

    fn publication(deliveries: usize) -> Publication {
        let event = Arc::new(Event::sample("chat.completed", json!({})));
        Publication {
            tenant: event.tenant.clone(),
            deliveries: (0..deliveries)
                .map(|n| Delivery::pending(&event, TargetKind::Webhook, &format!("hook-{n}"), 0))
                .collect(),
            events: vec![event],
            idempotency: None,
        }
    }

    #[tokio::test]
    async fn leases_only_what_free_slots_beyond_the_reserve_allow_and_starts_after_the_write() {
        let slots = Arc::new(Semaphore::new(8));
        let (handoff, mut handed) =
            Handoff::new(Arc::new(Notify::new()), Arc::clone(&slots), 1_000);
        let mut first = publication(3);
        let leased = handoff.lease(&mut first, 50);
        assert_eq!(leased.lot.as_ref().unwrap().items.len(), 3);
        assert!(first.deliveries.iter().all(|d| d.next_attempt_at == 1_050
            && d.lease_token.as_deref() == Some(&*leased.lot.as_ref().unwrap().token)));
        // 5 slots free, 4 of them kept for claims: one more delivery may be handed off.
        let mut second = publication(3);
        let partly = handoff.lease(&mut second, 50);
        assert_eq!(partly.lot.as_ref().unwrap().items.len(), 1);
        assert_eq!(partly.unleased, 2);
        assert_eq!(second.deliveries[1].lease_token, None);
        assert_eq!(second.deliveries[1].next_attempt_at, 0);
        assert_eq!(slots.available_permits(), 4);

        // A publication that was not written frees its slots; nothing reaches the worker.
        drop(partly);
        assert_eq!(slots.available_permits(), 5);
        assert!(handed.try_recv().is_err());

        leased.start();
        let started: Vec<Handed> = std::iter::from_fn(|| handed.try_recv().ok()).collect();
        let ids: Vec<&str> = started.iter().map(|h| h.delivery.id.as_str()).collect();
        let expected: Vec<&str> = first.deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, expected);
        // Each started delivery holds its slot until its attempt ends.
        assert_eq!(slots.available_permits(), 5);
        drop(started);
        assert_eq!(slots.available_permits(), 8);
    }

    #[tokio::test]
    async fn a_node_without_a_worker_leases_nothing() {
        let handoff = Handoff::none(Arc::new(Notify::new()));
        let mut written = publication(2);
        let leased = handoff.lease(&mut written, 0);
        assert!(leased.lot.is_none());
        assert_eq!(leased.unleased, 2);
        assert!(written.deliveries.iter().all(|d| d.lease_token.is_none()));
    }
}
