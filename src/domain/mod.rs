//! Plain types and the rules that govern them. No I/O except name resolution in [`net`].

pub mod agent;
pub mod api_key;
pub mod custom_types;
pub mod delivery;
pub mod event;
pub mod event_types;
pub mod incoming;
pub mod log;
pub mod net;
pub mod notice;
pub mod outgoing;
pub mod rotation;
pub mod signature;
pub mod template;
pub mod tenant;
pub mod throttle;
pub mod time;

/// A rule broken by user input, naming the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Builds a fresh, time-ordered identifier (UUIDv7), so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
