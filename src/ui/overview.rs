//! The overview: every webhook of both directions at a glance, and the tenant's totals.
//! The panel reloads itself every 5 seconds (htmx), in place, at a fixed size per row.

use axum::response::{IntoResponse, Response};
use futures_util::future::join_all;
use maud::{Markup, html};
use serde_json::Value;

use super::{
    backend::{ApiFailure, Backend, encode},
    layout::{Nav, failure_page, page, text_or_dash},
    session::Session,
    tenant_only,
};

pub async fn show(session: Session) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    match panel(&session.api).await {
        Ok(panel) => page(
            "Overview",
            Some(session.role),
            Nav::Overview,
            html! {
                div.actions {
                    h1 { "Overview" }
                    a.button href="/ui/outgoing/new" { "New outgoing webhook" }
                    a.button href="/ui/incoming/new" { "New incoming webhook" }
                }
                (panel)
            },
        )
        .into_response(),
        Err(failure) => failure_page(session.role, &failure),
    }
}

/// The panel alone, for the auto-refresh.
pub async fn live(session: Session) -> Response {
    if let Some(elsewhere) = tenant_only(&session) {
        return elsewhere;
    }
    match panel(&session.api).await {
        Ok(panel) => panel.into_response(),
        Err(failure) => html! { (super::layout::notice(false, &failure.detail)) }.into_response(),
    }
}

/// Webhooks of each direction whose statistics the overview shows: the newest. Each costs two
/// reads per refresh (its statistics and its latest failure), every 5 s for each open
/// overview: with 1,000 of each, every refresh was 4,000 reads at once, seconds of CPU, so one
/// open page could keep a node busy. The older ones are listed with their settings only; their
/// own pages have their statistics.
const WITH_STATISTICS: usize = 20;

/// A listing's webhooks (oldest first), each with whether its statistics are read, and how
/// many are not.
fn with_statistics(listing: Value) -> (Vec<(Value, bool)>, usize) {
    let Value::Array(all) = listing else {
        return (Vec::new(), 0);
    };
    let without = all.len().saturating_sub(WITH_STATISTICS);
    let hooks = all.into_iter().enumerate();
    (
        hooks.map(|(i, hook)| (hook, i >= without)).collect(),
        without,
    )
}

/// One webhook's row: its settings and its statistics, with the latest failure.
struct Row {
    direction: &'static str,
    hook: Value,
    stats: Value,
    last_error: Option<String>,
}

async fn row(
    api: &Backend,
    direction: &'static str,
    (hook, statistics): (Value, bool),
) -> Result<Row, ApiFailure> {
    if !statistics {
        let (stats, last_error) = (Value::Null, None);
        return Ok(Row {
            direction,
            hook,
            stats,
            last_error,
        });
    }
    let id = encode(hook["id"].as_str().unwrap_or_default());
    let failed = if direction == "outgoing" {
        "failed"
    } else {
        "rejected"
    };
    let stats = api
        .get(&format!(
            "/api/webhooks/{id}/statistics?webhook_type={direction}"
        ))
        .await?;
    let latest_failure = api
        .get(&format!(
            "/api/webhooks/{id}/logs?webhook_type={direction}&status={failed}&limit=1"
        ))
        .await?;
    let last_error = latest_failure.get(0).map(|entry| {
        match (&entry["error_message"], &entry["response_status"]) {
            (Value::String(message), _) => message.clone(),
            (_, Value::Number(status)) => format!("answered {status}"),
            _ => "failed".to_string(),
        }
    });
    Ok(Row {
        direction,
        hook,
        stats,
        last_error,
    })
}

async fn panel(api: &Backend) -> Result<Markup, ApiFailure> {
    let totals = api.get("/api/webhooks/stats").await?;
    let outgoing = api.get("/api/webhooks/outgoing").await?;
    let incoming = api.get("/api/webhooks/incoming").await?;
    let (outgoing, incoming) = (with_statistics(outgoing), with_statistics(incoming));
    let without = [("outgoing", outgoing.1), ("incoming", incoming.1)];
    let hooks = (outgoing.0.into_iter().map(|h| ("outgoing", h)))
        .chain(incoming.0.into_iter().map(|h| ("incoming", h)));
    let rows: Vec<Row> = join_all(hooks.map(|(direction, hook)| row(api, direction, hook)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(html! {
        div #overview hx-get="/ui/overview/live" hx-trigger="every 5s" hx-swap="outerHTML" {
            section.totals aria-label="Totals" {
                div { span { "Outgoing webhooks" } b { (totals["outgoing_webhooks"]) } }
                div { span { "Incoming webhooks" } b { (totals["incoming_webhooks"]) } }
                div { span { "Requests" } b { (totals["total_requests"]) } }
                div { span { "Succeeded" } b { (totals["successful_requests"]) } }
                div { span { "Failed" } b { (totals["failed_requests"]) } }
                div { span { "Success rate" } b { (totals["success_rate"]) " %" } }
            }
            section.card {
                h2 { "Webhooks" }
                @if rows.is_empty() {
                    p.muted { "No webhooks yet. Create an outgoing one to deliver events, or an incoming one to receive data." }
                } @else {
                    div.scroll {
                        table #webhooks {
                            thead { tr {
                                th { "Webhook" } th { "Direction" } th { "Active" } th { "Circuit" }
                                th { "Success (1 h)" } th { "p95 (1 h)" } th { "Pending" } th { "Last error" }
                            } }
                            tbody { @for row in &rows { (row_markup(row)) } }
                        }
                    }
                    @for (direction, count) in without {
                        @if count > 0 {
                            p.muted data-without-statistics=(direction) {
                                "Statistics are shown for the " (WITH_STATISTICS) " newest "
                                (direction) " webhooks; open one of the " (count)
                                " older ones for its own."
                            }
                        }
                    }
                    p.muted { "Success rate and p95 latency over the last hour; totals since the start. Refreshes every 5 s." }
                }
            }
        }
    })
}

fn row_markup(row: &Row) -> Markup {
    let id = row.hook["id"].as_str().unwrap_or_default();
    let active = row.hook["is_active"].as_bool().unwrap_or(false);
    let circuit = row.stats["circuit_state"].as_str();
    let hour = &row.stats["last_hour"];
    html! {
        tr data-webhook=(id) {
            td { a href={ "/ui/" (row.direction) "/" (encode(id)) } { (text_or_dash(&row.hook["name"])) } }
            td { (row.direction) }
            td { span.badge.on[active].off[!active] { @if active { "active" } @else { "off" } } }
            td {
                @if let Some(circuit) = circuit {
                    span.badge.(circuit) data-circuit=(circuit) { (circuit.replace('_', "-")) }
                } @else { "—" }
            }
            td { @match hour["total_requests"].as_i64() {
                Some(0) | None => "—",
                Some(_) => { (hour["success_rate"]) " %" },
            } }
            td { @match hour["p95_processing_time_ms"].as_f64() {
                Some(ms) => { (ms) " ms" },
                None => "—",
            } }
            td { (text_or_dash(&row.stats["pending"])) }
            td { (row.last_error.as_deref().unwrap_or("—")) }
        }
    }
}
