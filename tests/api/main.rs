//! The integration suite: hookd runs for real on a loopback port and is driven over HTTP. Every
//! scenario runs twice, once per store backend (see [`both_backends!`]).

mod helpers;

mod admin_keys;
mod agent_push;
mod agents;
mod auth;
mod cli;
mod connections;
mod dashboard;
mod delivery;
mod event_types;
mod inbox_order;
mod incoming_receive;
mod incoming_webhooks;
mod isolation;
mod meta;
mod nats;
mod notices;
mod order;
mod outgoing_webhooks;
mod quotas;
mod receiver;
mod receivers;
mod receiving;
mod retention;
mod rotation;
mod statistics;
mod templates;
mod untrusted_input;
