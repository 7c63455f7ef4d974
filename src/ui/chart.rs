//! The delivery chart: successes and failures per minute over the last hour as stacked bars, and
//! the average latency as a line, drawn server-side as inline SVG (no chart library).

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

const MINUTES: usize = 60;
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;

#[derive(Default, Clone, Copy)]
struct Minute {
    succeeded: u32,
    failed: u32,
    total_ms: f64,
}

/// Buckets log entries (newest first, as the API gives them) into the minutes before `now`.
fn buckets(entries: &[Value], now: DateTime<Utc>) -> [Minute; MINUTES] {
    let mut minutes = [Minute::default(); MINUTES];
    for entry in entries {
        let Some(at) = entry["created_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        let age = (now - at.with_timezone(&Utc)).num_minutes();
        let Ok(age) = usize::try_from(age) else {
            continue;
        };
        if age >= MINUTES {
            continue;
        }
        let minute = &mut minutes[MINUTES - 1 - age];
        match entry["status"].as_str() {
            Some("delivered" | "accepted") => minute.succeeded += 1,
            _ => minute.failed += 1,
        }
        minute.total_ms += entry["processing_time_ms"].as_f64().unwrap_or(0.0);
    }
    minutes
}

/// The chart for `entries` (a webhook's latest log entries).
pub fn deliveries(entries: &[Value], now: DateTime<Utc>) -> Markup {
    let minutes = buckets(entries, now);
    let most = minutes
        .iter()
        .map(|m| m.succeeded + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let slowest = minutes
        .iter()
        .filter(|m| m.succeeded + m.failed > 0)
        .map(|m| m.total_ms / f64::from(m.succeeded + m.failed))
        .fold(0.0, f64::max)
        // At least a microsecond, so that a quiet hour does not divide by zero.
        .max(0.001);
    let slot = WIDTH / MINUTES as f64;
    let scale = (HEIGHT - 20.0) / f64::from(most);
    let latency_points: Vec<String> = minutes
        .iter()
        .enumerate()
        .filter(|(_, m)| m.succeeded + m.failed > 0)
        .map(|(i, m)| {
            let average = m.total_ms / f64::from(m.succeeded + m.failed);
            let y = HEIGHT - average / slowest * (HEIGHT - 20.0);
            format!("{:.1},{:.1}", i as f64 * slot + slot / 2.0, y)
        })
        .collect();
    let (succeeded, failed): (u32, u32) = minutes
        .iter()
        .fold((0, 0), |(s, f), m| (s + m.succeeded, f + m.failed));
    html! {
        figure.chart-box {
            svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 16.0) } role="img"
                aria-label={ "Last hour: " (succeeded) " succeeded, " (failed) " failed" } {
                line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
                @for (i, minute) in minutes.iter().enumerate() {
                    @let x = i as f64 * slot + 1.0;
                    @let ok = f64::from(minute.succeeded) * scale;
                    @let ko = f64::from(minute.failed) * scale;
                    @if minute.succeeded > 0 {
                        rect.ok x=(format!("{x:.1}")) y=(format!("{:.1}", HEIGHT - ok)) width=(format!("{:.1}", slot - 2.0)) height=(format!("{ok:.1}")) {}
                    }
                    @if minute.failed > 0 {
                        rect.ko x=(format!("{x:.1}")) y=(format!("{:.1}", HEIGHT - ok - ko)) width=(format!("{:.1}", slot - 2.0)) height=(format!("{ko:.1}")) {}
                    }
                }
                @if latency_points.len() > 1 {
                    polyline.lat points=(latency_points.join(" ")) {}
                }
                text x="0" y="12" { "max " (most) "/min · latency max " (slowest) " ms" }
                text x="0" y=(HEIGHT + 14.0) { "60 min ago" }
                text x=(WIDTH) y=(HEIGHT + 14.0) text-anchor="end" { "now" }
            }
            figcaption.muted {
                "Last hour, per minute: " (succeeded) " succeeded (green), " (failed)
                " failed (red); the line is the average latency."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_fall_into_the_minute_they_happened_and_older_ones_are_left_out() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let entries = [
            json!({"created_at": "2026-01-01T12:00:10Z", "status": "delivered", "processing_time_ms": 10}),
            json!({"created_at": "2026-01-01T12:00:20Z", "status": "failed", "processing_time_ms": 30}),
            json!({"created_at": "2026-01-01T11:58:00Z", "status": "delivered", "processing_time_ms": 5}),
            json!({"created_at": "2026-01-01T10:00:00Z", "status": "delivered", "processing_time_ms": 5}),
        ];
        let minutes = buckets(&entries, now);
        let last = minutes[MINUTES - 1];
        assert_eq!((last.succeeded, last.failed, last.total_ms), (1, 1, 40.0));
        assert_eq!(minutes[MINUTES - 3].succeeded, 1);
        let counted: u32 = minutes.iter().map(|m| m.succeeded + m.failed).sum();
        assert_eq!(counted, 3);
    }
}
