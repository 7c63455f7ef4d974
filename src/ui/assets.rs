//! Static files compiled into the binary: nothing is fetched at run time. See `assets/README.md`
//! for where the third-party file comes from.

use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// Name, content type and bytes of each asset.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "hookd.css",
        "text/css; charset=utf-8",
        include_str!("assets/hookd.css"),
    ),
    (
        "hookd.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/hookd.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/htmx-2.0.8.min.js"),
    ),
];

pub async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Short: the names carry no version, and a new binary may change them.
                (header::CACHE_CONTROL, "public, max-age=300"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
