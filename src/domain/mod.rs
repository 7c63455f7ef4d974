//! Plain types and the rules that govern them. No I/O except name resolution in [`net`].

pub mod agent;
pub mod api_key;
pub mod custom_types;
pub mod delivery;
pub mod event;
pub mod event_types;
pub mod incoming;
mod invalid;
pub mod log;
pub mod net;
pub mod notice;
pub mod outgoing;
pub mod payload;
pub mod quota;
pub mod rotation;
pub mod signature;
pub mod template;
pub mod tenant;
pub mod throttle;
pub mod time;

pub use invalid::Invalid;
pub(crate) use invalid::{check_range, check_text};

/// Builds a fresh, time-ordered identifier (UUIDv7), so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
