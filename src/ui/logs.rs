//! A webhook's log (delivery attempts or received requests) with filters and pages, each entry
//! expandable to its headers and bodies. Shared by both directions; reloaded in place by htmx.

use axum::{
    extract::{Path, Query},
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{
    backend::{ApiFailure, Backend, encode},
    layout::{notice, text_or_dash},
    session::Session,
};

const PAGE_SIZE: usize = 20;

#[derive(Deserialize, Default)]
pub struct LogFilter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    page: usize,
}

/// `GET /ui/outgoing/{id}/log`: the log section alone.
pub async fn outgoing_fragment(
    session: Session,
    Path(id): Path<String>,
    Query(filter): Query<LogFilter>,
) -> Response {
    fragment(&session.api, "outgoing", &id, &filter).await
}

/// `GET /ui/incoming/{id}/log`: the log section alone.
pub async fn incoming_fragment(
    session: Session,
    Path(id): Path<String>,
    Query(filter): Query<LogFilter>,
) -> Response {
    fragment(&session.api, "incoming", &id, &filter).await
}

async fn fragment(
    api: &Backend,
    direction: &'static str,
    id: &str,
    filter: &LogFilter,
) -> Response {
    section_or_notice(api, direction, id, filter)
        .await
        .into_response()
}

/// The log section of a webhook page, first page, no filter.
pub async fn first_page(api: &Backend, direction: &'static str, id: &str) -> Markup {
    section_or_notice(api, direction, id, &LogFilter::default()).await
}

/// The section, or what went wrong in its place (the page around it still works).
async fn section_or_notice(
    api: &Backend,
    direction: &'static str,
    id: &str,
    filter: &LogFilter,
) -> Markup {
    section(api, direction, id, filter)
        .await
        .unwrap_or_else(|failure| html! { div #log { (notice(false, &failure.detail)) } })
}

async fn section(
    api: &Backend,
    direction: &'static str,
    id: &str,
    filter: &LogFilter,
) -> Result<Markup, ApiFailure> {
    let mut path = format!(
        "/api/webhooks/{}/logs?webhook_type={direction}&limit={}&offset={}",
        encode(id),
        PAGE_SIZE + 1,
        filter.page * PAGE_SIZE
    );
    if !filter.status.is_empty() {
        path.push_str(&format!("&status={}", encode(&filter.status)));
    }
    if !filter.event_type.is_empty() {
        path.push_str(&format!("&event_type={}", encode(&filter.event_type)));
    }
    let entries = api.get(&path).await?;
    let entries = entries.as_array().cloned().unwrap_or_default();
    let more = entries.len() > PAGE_SIZE;
    let base = format!("/ui/{direction}/{}/log", encode(id));
    let statuses: &[&str] = match direction {
        "outgoing" => &["delivered", "failed"],
        _ => &["accepted", "rejected"],
    };
    let page_link = |page: usize| {
        format!(
            "{base}?status={}&event_type={}&page={page}",
            encode(&filter.status),
            encode(&filter.event_type)
        )
    };
    Ok(html! {
        div #log hx-get=(page_link(filter.page)) hx-trigger="log-changed from:body" hx-swap="outerHTML" {
            form.actions hx-get=(base) hx-target="#log" hx-swap="outerHTML" aria-label="Log filters" {
                label for="log-status" { "Status" }
                select #log-status name="status" {
                    option value="" { "any" }
                    @for status in statuses {
                        option value=(status) selected[filter.status == *status] { (status) }
                    }
                }
                @if direction == "outgoing" {
                    label for="log-event-type" { "Event type" }
                    input.fit #log-event-type type="text" name="event_type" value=(filter.event_type)
                        placeholder="e.g. chat.completed";
                }
                button.secondary type="submit" { "Filter" }
            }
            @if entries.is_empty() {
                p.muted.empty { "Nothing logged yet" @if filter.page > 0 { " on this page" } "." }
            } @else {
                ol.log-entries {
                    @for entry in entries.iter().take(PAGE_SIZE) { (entry_markup(direction, id, entry)) }
                }
            }
            div.actions {
                @if filter.page > 0 {
                    button.secondary data-page="newer" hx-get=(page_link(filter.page - 1)) hx-target="#log" hx-swap="outerHTML" { "← Newer" }
                }
                @if more {
                    button.secondary data-page="older" hx-get=(page_link(filter.page + 1)) hx-target="#log" hx-swap="outerHTML" { "Older →" }
                }
            }
        }
    })
}

fn pretty(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn entry_markup(direction: &str, webhook_id: &str, entry: &Value) -> Markup {
    let status = entry["status"].as_str().unwrap_or_default();
    let delivery = entry["delivery_id"].as_str();
    html! {
        li.log-entry data-status=(status) {
            details {
                summary {
                    span.badge.(status) { (status) } " "
                    code { (text_or_dash(&entry["event_type"])) } " · "
                    (text_or_dash(&entry["response_status"])) " · "
                    (entry["processing_time_ms"]) " ms · "
                    span.muted { (text_or_dash(&entry["created_at"])) }
                }
                @if let Some(error) = entry["error_message"].as_str() {
                    p.field-error { (error) }
                }
                div.split {
                    div {
                        h3.muted { "Request headers" }
                        pre { (pretty(&entry["request_headers"])) }
                        h3.muted { "Request body" }
                        pre { (pretty(&entry["request_payload"])) }
                    }
                    div {
                        h3.muted { "Response (" (text_or_dash(&entry["response_status"])) ")" }
                        pre { (text_or_dash(&entry["response_body"])) }
                        p.muted { "Attempts before this one: " (entry["retry_count"]) }
                    }
                }
                @if let (true, "failed", Some(delivery)) = (direction == "outgoing", status, delivery) {
                    div.actions {
                        button.secondary
                            hx-post={ "/ui/outgoing/" (encode(webhook_id)) "/deliveries/" (encode(delivery)) "/retry" }
                            hx-target="next .result" { "Retry this delivery" }
                        span.result {}
                    }
                }
            }
        }
    }
}
