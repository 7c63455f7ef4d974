//! How much one company may hold and ask for at once. Each of these is work every node does for
//! the company (its webhooks' subscriptions are matched against each of its events and kept in
//! memory, its types are compiled and kept, its listings are answered whole), so without a
//! bound one tenant's API calls could make a single request cost minutes of the shared write
//! path and gigabytes of memory (measured: 2,000 webhooks and one batch of 1,000 events held
//! SQLite's writer for 41 s, at 870 MiB).

/// The node's bounds, from the configuration. A webhook's settings take up to ~100 KiB (a
/// 64 KiB payload template, 50 headers, 50 filters), and a listing returns them whole: 1,000
/// of them at most is ~100 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Outgoing webhooks per company, and incoming webhooks per company (each on its own).
    pub webhooks: i64,
    /// Event types a company defines (archived ones included: they are kept and restorable).
    pub event_types: i64,
    /// Agents per company (each with its inbox; listed whole).
    pub agents: i64,
    /// Deliveries one publish request may make: its events times the webhooks subscribed to each.
    pub deliveries_per_request: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            webhooks: 1_000,
            event_types: 1_000,
            agents: 1_000,
            deliveries_per_request: 10_000,
        }
    }
}

/// A kind of thing whose number per company is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    OutgoingWebhooks,
    IncomingWebhooks,
    EventTypes,
    Agents,
}

impl Owned {
    /// For people: "outgoing webhooks".
    pub fn label(self) -> &'static str {
        match self {
            Owned::OutgoingWebhooks => "outgoing webhooks",
            Owned::IncomingWebhooks => "incoming webhooks",
            Owned::EventTypes => "event types",
            Owned::Agents => "agents",
        }
    }

    /// The setting that bounds it.
    pub fn setting(self) -> &'static str {
        match self {
            Owned::OutgoingWebhooks | Owned::IncomingWebhooks => "HOOKD_MAX_WEBHOOKS_PER_COMPANY",
            Owned::EventTypes => "HOOKD_MAX_EVENT_TYPES_PER_COMPANY",
            Owned::Agents => "HOOKD_MAX_AGENTS_PER_COMPANY",
        }
    }

    /// How many a company may hold under `quotas`.
    pub fn most(self, quotas: &Quotas) -> i64 {
        match self {
            Owned::OutgoingWebhooks | Owned::IncomingWebhooks => quotas.webhooks,
            Owned::EventTypes => quotas.event_types,
            Owned::Agents => quotas.agents,
        }
    }
}
