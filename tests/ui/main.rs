//! Browser tests of the dashboard: hookd runs for real on a loopback port (SQLite; the store
//! suite in `tests/api` covers both backends), a headless Chromium drives `/ui` through
//! WebDriver, and each scenario saves screenshots under `target/ui-screenshots/`.
//! Without Chromium the scenarios say SKIPPED and pass, unless `HOOKD_REQUIRE_BROWSER=1`.

// Shared with tests/api, of which this target uses only part.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/receiver.rs"]
mod receiver;

mod browser;

mod agents;
mod events;
mod incoming;
mod keys;
mod outgoing;
mod sign_in;
