//! The page shell and the small pieces every page uses: navigation, form fields that show the
//! API's validation message beside them, and error messages in place of missing data.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{DOCTYPE, Markup, html};

use super::{backend::ApiFailure, session::Role};

/// Which entry of the navigation is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Agents,
    Events,
    Keys,
    None,
}

/// A whole page: header with navigation (for a signed-in role) and `body`.
pub fn page(title: &str, role: Option<Role>, current: Nav, body: Markup) -> Markup {
    let links: &[(Nav, &str, &str)] = match role {
        Some(Role::Tenant) => &[
            (Nav::Overview, "/ui", "Overview"),
            (Nav::Agents, "/ui/agents", "Agents"),
            (Nav::Events, "/ui/events", "Event types"),
        ],
        Some(Role::Operator) => &[(Nav::Keys, "/ui/keys", "API keys")],
        None => &[],
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                // htmx would add its indicator styles as an inline <style>, and evaluate
                // `js:` attributes; the CSP forbids both and the dashboard needs neither.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
                title { (title) " · hookd" }
                link rel="stylesheet" href="/ui/assets/hookd.css";
                script src="/ui/assets/htmx.min.js" defer {}
                script src="/ui/assets/hookd.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "hookd" }
                    nav aria-label="Main" {
                        @for (nav, href, label) in links {
                            a href=(href) aria-current=[(*nav == current).then_some("page")] { (label) }
                        }
                    }
                    @if role.is_some() {
                        form method="post" action="/ui/signout" {
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A short result line for an action (sent, saved, replayed…).
pub fn notice(ok: bool, text: &str) -> Markup {
    html! { p.notice.good[ok].bad[!ok] role="status" { (text) } }
}

/// A page that could not be built: the message instead of a blank page.
pub fn failure_page(role: Role, failure: &ApiFailure) -> Response {
    let status = if failure.status.is_client_error() || failure.status.is_server_error() {
        failure.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    let body = html! {
        h1 { "Something went wrong" }
        (notice(false, &failure.detail))
        p { a href="/ui" { "Back to the overview" } }
    };
    (status, page("Error", Some(role), Nav::None, body)).into_response()
}

/// `text` as a string from a JSON value, or a dash when absent.
pub fn text_or_dash(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "—".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
