//! hookd: a webhook gateway. Outgoing webhooks carry events to subscribers; incoming webhooks take
//! data from outside systems and route it to agents. See `README.md` for the tour and `docs/` for
//! the decisions.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod housekeeping;
pub mod ingest;
pub mod sandbox;
pub mod server;
pub mod sources;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod ui;

#[cfg(test)]
mod layering;
#[cfg(test)]
mod properties;
