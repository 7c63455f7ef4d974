//! API keys, for the operator key only: list, create (the key is shown once), revoke.

use axum::{
    Form, Router,
    extract::Path,
    http::{Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::html;
use serde_json::{Value, json};

use super::{
    UiState,
    backend::{ApiFailure, encode},
    forms::{field, form_error, input},
    layout::{Nav, failure_page, page, text_or_dash},
    session::{Role, Session},
};
use crate::domain::tenant::Scope;

pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/ui/keys", get(show).post(create))
        .route("/ui/keys/{id}/revoke", post(revoke))
}

/// Tenants are sent to their overview: managing keys is the operator's.
fn operator_only(session: &Session) -> Option<Response> {
    (session.role != Role::Operator).then(|| Redirect::to("/ui").into_response())
}

/// The form's values: repeated `scopes` fields, so read as pairs.
type Pairs = Vec<(String, String)>;

fn value<'a>(pairs: &'a Pairs, name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.trim())
}

async fn keys_page(
    session: &Session,
    created: Option<&Value>,
    form: &Pairs,
    error: Option<&ApiFailure>,
) -> Response {
    let keys = match session.api.get("/api/admin/keys").await {
        Ok(keys) => keys,
        Err(failure) => return failure_page(session.role, &failure),
    };
    let keys = keys.as_array().cloned().unwrap_or_default();
    let input = |name: &str| input(name, "text", value(form, name), "", error);
    let body = html! {
        h1 { "API keys" }
        @if let Some(created) = created {
            section.card.secret-once #new-key {
                h2 { "New key for " (text_or_dash(&created["user_id"])) " / " (text_or_dash(&created["company_id"])) }
                p { "Copy it now: it is shown only this once." }
                div.url-row {
                    code #created-key { (text_or_dash(&created["key"])) }
                    button.secondary type="button" data-copy="#created-key" { "Copy" }
                }
            }
        }
        section.card {
            h2 { "Create a key" }
            form method="post" action="/ui/keys" novalidate {
                (form_error(error, &["user_id", "company_id", "name", "scopes"]))
                div.split {
                    (field("User id", input("user_id"), "user_id", error))
                    (field("Company id", input("company_id"), "company_id", error))
                }
                (field("Label (optional)", input("name"), "name", error))
                fieldset.field {
                    legend { "Scopes (none ticked: all)" }
                    @for scope in Scope::ALL {
                        @let id = format!("scope-{}", scope.as_str().replace(':', "-"));
                        span.check.scope {
                            input id=(id) type="checkbox" name="scopes" value=(scope.as_str())
                                checked[form.iter().any(|(n, v)| n == "scopes" && v == scope.as_str())];
                            " " label for=(id) { (scope.as_str()) }
                        }
                    }
                }
                button type="submit" { "Create key" }
            }
        }
        section.card {
            h2 { "Keys" }
            div.scroll {
                table #keys {
                    thead { tr { th { "Prefix" } th { "Tenant" } th { "Label" } th { "Scopes" } th { "Created" } th {} } }
                    tbody { @for key in &keys {
                        tr {
                            td { code { (text_or_dash(&key["key_prefix"])) "…" } }
                            td { (text_or_dash(&key["user_id"])) " / " (text_or_dash(&key["company_id"])) }
                            td { (text_or_dash(&key["name"])) }
                            td.muted { (key["scopes"].as_array().map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                            td.muted { (text_or_dash(&key["created_at"])) }
                            td {
                                @if key["revoked_at"].is_null() {
                                    form method="post" action={ "/ui/keys/" (encode(key["id"].as_str().unwrap_or_default())) "/revoke" } {
                                        button.secondary type="submit" { "Revoke" }
                                    }
                                } @else {
                                    span.badge.off { "revoked" }
                                }
                            }
                        }
                    } }
                }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        page("API keys", Some(session.role), Nav::Keys, body),
    )
        .into_response()
}

async fn show(session: Session) -> Response {
    if let Some(elsewhere) = operator_only(&session) {
        return elsewhere;
    }
    keys_page(&session, None, &Vec::new(), None).await
}

async fn create(session: Session, Form(form): Form<Pairs>) -> Response {
    if let Some(elsewhere) = operator_only(&session) {
        return elsewhere;
    }
    let scopes: Vec<&str> = form
        .iter()
        .filter(|(name, _)| name == "scopes")
        .map(|(_, scope)| scope.as_str())
        .collect();
    let mut body = json!({
        "user_id": value(&form, "user_id"),
        "company_id": value(&form, "company_id"),
        "scopes": scopes,
    });
    if !value(&form, "name").is_empty() {
        body["name"] = Value::from(value(&form, "name"));
    }
    match session.api.post("/api/admin/keys", &body).await {
        Ok(created) => keys_page(&session, Some(&created), &Vec::new(), None).await,
        Err(failure) => keys_page(&session, None, &form, Some(&failure)).await,
    }
}

async fn revoke(session: Session, Path(id): Path<String>) -> Response {
    if let Some(elsewhere) = operator_only(&session) {
        return elsewhere;
    }
    let path = format!("/api/admin/keys/{}", encode(&id));
    match session.api.call(Method::DELETE, &path, None).await {
        Ok(_) => Redirect::to("/ui/keys").into_response(),
        Err(failure) => failure_page(session.role, &failure),
    }
}
