//! The admin API's runtime backend changes (add, remove, weight): token
//! checked like every state change, then `Edge::runtime_change`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tracing::info;

use super::{Change, RuntimeError};
use crate::admin::{error, refuse, AppState};

fn apply(state: &AppState, service: &str, change: Change, what: &str) -> Response {
    match state.ctl.edge.runtime_change(service, change) {
        Ok(done) => {
            info!(service, backend = %done.backend, change = what, persisted = done.persisted, "backend changed by admin API");
            Json(json!({ "service": service, "backend": done.backend, "change": what, "persisted": done.persisted }))
                .into_response()
        }
        Err(e @ (RuntimeError::NoService(_) | RuntimeError::NoBackend { .. })) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e @ RuntimeError::Invalid(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e @ RuntimeError::Save { .. }) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The body's weight (`default` if absent), or why not.
fn weight_of(v: &Value, default: Option<u32>) -> Result<u32, &'static str> {
    match v.get("weight") {
        None => default.ok_or("\"weight\" is missing"),
        Some(w) => w
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
            .ok_or("\"weight\" must be an integer 0..=10000"),
    }
}

/// `POST /api/v1/services/{service}/backends` `{"address": "IP:PORT",
/// "name": optional (default: the address), "weight": optional (1)}`.
pub(crate) async fn add(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refuse(&state, &headers) {
        return r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be JSON: {\"address\": \"IP:PORT\", ...}",
        );
    };
    let Some(address) = v
        .get("address")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "\"address\" must be IP:PORT");
    };
    let name = match v.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return error(StatusCode::UNPROCESSABLE_ENTITY, "\"name\" must be a string"),
    };
    let weight = match weight_of(&v, Some(1)) {
        Ok(w) => w,
        Err(why) => return error(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    apply(&state, &service, Change::Add { name, address, weight }, "add")
}

/// `DELETE /api/v1/services/{service}/backends/{backend}`: the backend
/// drains out (no new connections; gone once its connections end).
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((service, backend)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refuse(&state, &headers) {
        return r;
    }
    apply(&state, &service, Change::Remove { backend }, "remove")
}

/// `POST /api/v1/services/{service}/backends/{backend}/weight` `{"weight": N}`.
pub(crate) async fn weight(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((service, backend)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refuse(&state, &headers) {
        return r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be JSON: {\"weight\": N}");
    };
    let weight = match weight_of(&v, None) {
        Ok(w) => w,
        Err(why) => return error(StatusCode::UNPROCESSABLE_ENTITY, why),
    };
    apply(&state, &service, Change::Weight { backend, weight }, "weight")
}
