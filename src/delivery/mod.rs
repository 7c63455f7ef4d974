//! Outgoing delivery: publishing events ([`publish`]), sending one attempt ([`sender`]), and the
//! loop that drives deliveries to completion ([`worker`]).

pub mod handoff;
pub mod publish;
pub mod sender;
pub mod worker;
