//! The operator dashboard at `/ui`: server-rendered HTML (maud) with htmx for partial updates.
//! It is a client of the JSON API — every read and change goes through [`backend::Backend`] —
//! so it holds no rule of its own. Assets are compiled into the binary.

mod agents;
mod assets;
mod backend;
mod chart;
mod events;
mod forms;
mod incoming;
mod keys;
mod layout;
mod logs;
mod outgoing;
mod overview;
mod rotation;
mod session;

use axum::{
    Form, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::html;
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{
    api::{auth::client_of, error::ApiError},
    state::AppState,
};
use layout::{Nav, page};
use session::{Role, Session};

/// What dashboard handlers need: the app (for key checks) and the API router they call.
#[derive(Clone)]
pub struct UiState {
    app: AppState,
    api: Router,
}

/// The dashboard's routes, all under `/ui`. `api` is the JSON API the pages call.
pub fn router(app: AppState, api: Router) -> Router {
    Router::new()
        .route("/ui", get(overview::show))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/ui/overview/live", get(overview::live))
        .route("/ui/signin", get(sign_in_form).post(sign_in))
        .route("/ui/signout", post(sign_out))
        .route("/ui/assets/{name}", get(assets::serve))
        .merge(outgoing::routes())
        .merge(incoming::routes())
        .merge(rotation::routes())
        .merge(agents::routes())
        .merge(events::routes())
        .merge(keys::routes())
        .layer(middleware::from_fn(session::same_origin_only))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        // Pages show receiving tokens and keys' details: no shared or back-button cache may keep
        // them. Assets set their own caching, which stays.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(UiState { app, api })
}

/// Everything the dashboard loads comes from `/ui/assets` (no inline script, style or event
/// handler, so injected markup cannot run), and no other site may frame it (clickjacking).
/// `X-Frame-Options` says the latter again for browsers that predate `frame-ancestors`.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'; object-src 'none'";

fn sign_in_page(error: Option<&str>) -> maud::Markup {
    page(
        "Sign in",
        None,
        Nav::None,
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                p { "Paste an API key (" code { "hk_…" } "), or the operator key to manage API keys. \
                     It is kept only until you close the browser." }
                form method="post" action="/ui/signin" {
                    div.field.invalid[error.is_some()] {
                        label for="key" { "API key" }
                        input #key type="password" name="key" autocomplete="off" required autofocus
                            aria-describedby=[error.map(|_| "key-error")];
                        @if let Some(error) = error {
                            p.field-error #key-error role="alert" { (error) }
                        }
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

async fn sign_in_form() -> maud::Markup {
    sign_in_page(None)
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

async fn sign_in(State(state): State<UiState>, parts: Parts, Form(form): Form<SignIn>) -> Response {
    let key = form.key.trim();
    let client = client_of(&parts, &state.app);
    let role = match session::role_of(&state, client, key).await {
        Ok(role) => role,
        Err(ApiError::TooManyFailures { retry_after_secs }) => {
            let page = sign_in_page(Some(&format!(
                "Too many failed sign-ins from your address: try again in {retry_after_secs} s."
            )));
            let wait = [(header::RETRY_AFTER, retry_after_secs.to_string())];
            return (StatusCode::TOO_MANY_REQUESTS, wait, page).into_response();
        }
        Err(_) => {
            let page = sign_in_page(Some("This key is not valid (or has been revoked)."));
            return (StatusCode::UNAUTHORIZED, page).into_response();
        }
    };
    let landing = match role {
        Role::Tenant => "/ui",
        Role::Operator => "/ui/keys",
    };
    let cookie = session::sign_in_cookie(key, session::came_over_https(&parts.headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to(landing)).into_response()
}

async fn sign_out() -> Response {
    (
        [(header::SET_COOKIE, session::sign_out_cookie())],
        Redirect::to("/ui/signin"),
    )
        .into_response()
}

/// Pages for tenants only: the operator key has no tenant, so it is sent to its own page.
fn tenant_only(session: &Session) -> Option<Response> {
    (session.role != Role::Tenant).then(|| Redirect::to("/ui/keys").into_response())
}
