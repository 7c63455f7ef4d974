//! Outgoing delivery: publishing events ([`publish`]), sending one attempt ([`sender`]), the
//! loop that drives deliveries to completion ([`worker`]), and announcing what happens to
//! webhooks themselves ([`announce`]).

pub mod announce;
pub mod handoff;
pub mod publish;
pub mod sender;
pub mod worker;
