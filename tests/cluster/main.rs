//! Process-level tests: real `hookd serve` processes, killed and restarted, several on one
//! PostgreSQL database. Kept apart from `tests/api` so that these slower scenarios do not hold up
//! the API suite. What each proves is in `docs/benchmarks.md` ("Survival and scale-out").

// Shared with tests/api; this binary uses only part of them.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/receiver.rs"]
mod receiver;

mod nats;
mod node;
mod scale_out;
mod survival;
