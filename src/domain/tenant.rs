//! Who is asking: a tenant (user within a company) and what its key may do.

use serde::{Deserialize, Serialize};

/// The owner of webhooks and agents. Management calls see only rows with the same
/// `company_id` and `user_id`; events fan out to every webhook of the same company (as AGiXT does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    pub user_id: String,
    pub company_id: String,
}

/// What an API key may do. A key created without scopes gets all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "webhooks:delete")]
    WebhooksDelete,
    #[serde(rename = "events:publish")]
    EventsPublish,
    #[serde(rename = "agents:read")]
    AgentsRead,
    #[serde(rename = "agents:write")]
    AgentsWrite,
    /// Sending data to the tenant's incoming webhooks by id (`POST /api/webhook/{id}`);
    /// `webhooks:write` allows it too.
    #[serde(rename = "webhooks:receive")]
    WebhooksReceive,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::WebhooksDelete,
        Scope::EventsPublish,
        Scope::AgentsRead,
        Scope::AgentsWrite,
        Scope::WebhooksReceive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::WebhooksDelete => "webhooks:delete",
            Scope::EventsPublish => "events:publish",
            Scope::AgentsRead => "agents:read",
            Scope::AgentsWrite => "agents:write",
            Scope::WebhooksReceive => "webhooks:receive",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
