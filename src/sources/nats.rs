//! A NATS JetStream source (`[[sources.nats]]`): a durable pull consumer whose messages are
//! `POST /api/events` bodies. A message is acknowledged only once its event is durable; one the
//! API would refuse is terminated (never redelivered), logged and counted; one that cannot be
//! published now (the store unavailable) is negatively acknowledged with a delay, so it comes
//! back later and nothing is lost. Its `Nats-Msg-Id` header is its idempotency key: a message
//! redelivered after a crash (published, not yet acknowledged) gets the first answer and
//! publishes nothing new. Nodes that name the same consumer share its messages.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use async_nats::{
    Client,
    jetstream::{
        self, AckKind, Message,
        consumer::{AckPolicy, PullConsumer, pull},
    },
};
use futures_util::StreamExt;
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};

use crate::{
    api::{error::ApiError, events::parse_event},
    config::NatsSource,
    delivery::{
        catalogue::Catalogue,
        publish::{Publisher, Publishing},
    },
    domain::{check_text, tenant::Tenant},
};

/// How long a message that could not be published waits before it is redelivered, and how long
/// its slot stays taken: during a store outage a node tries `concurrency` messages per delay,
/// instead of running through the whole backlog naking each.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// One configured source, connected, its consumer checked.
pub struct Source {
    settings: NatsSource,
    /// Which `[[sources.nats]]` table, for messages (the URL may hold a password).
    name: String,
    client: Client,
    jetstream: jetstream::Context,
    consumer: PullConsumer,
    tenant: Tenant,
    publisher: Publisher,
    catalogue: Arc<Catalogue>,
    /// The API's body limit, which a message's payload is held to as well.
    max_bytes: usize,
}

impl Source {
    /// Connects to the server and opens the consumer (created if missing). A server that cannot
    /// be reached, or a stream that does not exist, is an error: the node does not start with a
    /// source it cannot read.
    pub async fn connect(
        settings: NatsSource,
        n: usize,
        publisher: Publisher,
        catalogue: Arc<Catalogue>,
        max_bytes: usize,
    ) -> anyhow::Result<Source> {
        let name = format!("sources.nats[{n}] (stream {})", settings.stream);
        let client = async_nats::ConnectOptions::new()
            .name("hookd")
            .connection_timeout(Duration::from_secs(5))
            .connect(settings.url.as_str())
            .await
            .with_context(|| format!("{name}: connecting to the NATS server"))?;
        let jetstream = jetstream::new(client.clone());
        let consumer = open_consumer(&jetstream, &settings)
            .await
            .with_context(|| format!("{name}: opening the consumer {}", settings.consumer))?;
        Ok(Source {
            tenant: Tenant {
                company_id: settings.company_id.clone(),
                user_id: settings.user_id.clone(),
            },
            settings,
            name,
            client,
            jetstream,
            consumer,
            publisher,
            catalogue,
            max_bytes,
        })
    }

    /// Publishes messages, at most `concurrency` at once, until `stop` turns true; then takes
    /// no more and lets those in flight finish (for at most `grace`).
    pub async fn run(self, mut stop: watch::Receiver<bool>, grace: Duration) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let source = Arc::new(self);
        let mut in_flight = JoinSet::new();
        let mut opened = Some(source.consumer.clone());
        loop {
            let messages = match source.messages(opened.take()).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(source = %source.name, error = format!("{error:#}"), "cannot read messages; trying again");
                    if pause(&mut stop, RETRY_DELAY).await {
                        break;
                    }
                    continue;
                }
            };
            let stopped = Arc::clone(&source)
                .take(messages, &slots, &mut in_flight, &mut stop)
                .await;
            if stopped {
                break;
            }
        }
        let finished = tokio::time::timeout(grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(source = %source.name, ?grace, "messages still in flight after the shutdown grace are left unacknowledged");
        }
        // Acknowledgements are buffered by the client: sent before the node exits.
        if let Err(error) = source.client.flush().await {
            tracing::warn!(source = %source.name, %error, "sending the last acknowledgements failed");
        }
    }

    /// The consumer's messages, fetched at most `concurrency` ahead; from `opened`, or from the
    /// consumer opened afresh (it was deleted, or its messages ended).
    async fn messages(&self, opened: Option<PullConsumer>) -> anyhow::Result<pull::Stream> {
        let consumer = match opened {
            Some(consumer) => consumer,
            None => open_consumer(&self.jetstream, &self.settings).await?,
        };
        Ok(consumer
            .stream()
            .max_messages_per_batch(self.settings.concurrency)
            .messages()
            .await?)
    }

    /// Hands `messages` to tasks in `in_flight`, each holding one of `slots`, until the node
    /// stops (`true`) or the messages end (`false`: they are to be opened again).
    async fn take(
        self: Arc<Self>,
        mut messages: pull::Stream,
        slots: &Arc<Semaphore>,
        in_flight: &mut JoinSet<()>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            while in_flight.try_join_next().is_some() {}
            let slot = tokio::select! {
                slot = Arc::clone(slots).acquire_owned() => slot.expect("the semaphore is never closed"),
                () = stopped(stop) => break,
            };
            let next = tokio::select! {
                next = messages.next() => next,
                () = stopped(stop) => break,
            };
            match next {
                Some(Ok(message)) => {
                    let (source, stop) = (Arc::clone(&self), stop.clone());
                    in_flight.spawn(async move {
                        source.handle(message, stop).await;
                        drop(slot);
                    });
                }
                Some(Err(error)) => {
                    tracing::warn!(source = %self.name, %error, "reading messages failed");
                    if error.kind() == pull::MessagesErrorKind::ConsumerDeleted {
                        return false;
                    }
                }
                None => return false,
            }
        }
        // What was fetched but not started is left to come back when its ack wait is over: a nak
        // now would only see it redelivered at once to this node's pull requests, which the
        // server keeps open until they expire.
        true
    }

    /// Publishes one message and answers the server: acknowledged once durable, terminated if
    /// it can never be published, else redelivered after [`RETRY_DELAY`].
    async fn handle(&self, message: Message, mut stop: watch::Receiver<bool>) {
        let (reply, outcome) = match self.publish(&message).await {
            Ok(()) => (AckKind::Ack, "published"),
            Err(error) => {
                let (status, code) = error.status_and_code();
                let sequence = message.info().map(|info| info.stream_sequence).ok();
                if status.is_client_error() {
                    tracing::warn!(source = %self.name, ?sequence, error = code, detail = %error, "message refused and terminated");
                    (AckKind::Term, "terminated")
                } else {
                    tracing::warn!(source = %self.name, ?sequence, error = code, detail = %error, "message not published now; redelivered later");
                    (AckKind::Nak(Some(RETRY_DELAY)), "retried")
                }
            }
        };
        let retry = matches!(reply, AckKind::Nak(_));
        // An acknowledgement that is lost leaves the message to be redelivered, which its
        // idempotency key makes harmless.
        if let Err(error) = message.ack_with(reply).await {
            tracing::warn!(source = %self.name, %error, "acknowledging a message failed");
        }
        metrics::counter!("hookd_nats_messages_total",
            "stream" => self.settings.stream.clone(),
            "consumer" => self.settings.consumer.clone(),
            "outcome" => outcome)
        .increment(1);
        if retry {
            pause(&mut stop, RETRY_DELAY).await;
        }
    }

    /// Publishes the event `message` holds, as `POST /api/events` with the message's
    /// `Nats-Msg-Id` as its `Idempotency-Key`.
    async fn publish(&self, message: &Message) -> Result<(), ApiError> {
        if message.payload.len() > self.max_bytes {
            return Err(ApiError::TooLarge(self.max_bytes));
        }
        let key = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|id| id.as_str());
        if let Some(key) = key {
            check_text("Nats-Msg-Id", key, 1, 255)?;
        }
        let events = vec![parse_event(&message.payload)?];
        self.publisher
            .publish_request(
                &self.catalogue,
                Publishing {
                    tenant: &self.tenant,
                    company_version: None,
                },
                events,
                key,
                |_| String::new(),
            )
            .await?;
        Ok(())
    }
}

/// The durable pull consumer `settings` name, created if missing. One that exists with another
/// filter is refused: it would publish messages the settings do not ask for.
async fn open_consumer(
    jetstream: &jetstream::Context,
    settings: &NatsSource,
) -> anyhow::Result<PullConsumer> {
    let stream = jetstream
        .get_stream(&settings.stream)
        .await
        .with_context(|| {
            format!(
                "the stream {} must exist (hookd reads a stream; its subjects, retention and \
             storage are the operator's to choose)",
                settings.stream
            )
        })?;
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            &settings.consumer,
            pull::Config {
                durable_name: Some(settings.consumer.clone()),
                filter_subject: settings.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let filter = &consumer.cached_info().config.filter_subject;
    if filter != &settings.subject {
        anyhow::bail!(
            "the consumer {} exists with the filter subject {filter:?}, not {:?}: delete it \
             or name another consumer",
            settings.consumer,
            settings.subject
        );
    }
    Ok(consumer)
}

/// Completes once `stop` is true (or its sender is gone: the node is stopping either way).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Waits `delay`, or less if the node stops; whether it stopped.
async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = stopped(stop) => true,
    }
}
