//! `POST /webhooks/{id}`: the one route without the bearer token — it is authenticated
//! by the trigger's signature or token instead, checked on the raw bytes. The delivery is
//! persisted (with a `received` decision) before the answer; deciding and dispatching
//! happen after it (see `worktrain_triggers::runtime`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use worktrain_core::error::Retry;
use worktrain_triggers::runtime::IngestOutcome;
use worktrain_triggers::verify::Headers;

use super::{AppState, Route, route};
use crate::errors::{HttpCode, HttpError};

/// The webhook route.
pub(super) fn routes() -> Vec<Route> {
    vec![Route {
        auth: false,
        ..route(Method::POST, "/webhooks/{id}", post(receive))
    }]
}

fn not_found(id: &str) -> Response {
    HttpError::http(
        StatusCode::NOT_FOUND,
        HttpCode::TriggerNotFound,
        format!("no webhook trigger `{id}`"),
        Retry::AfterFix,
        "check the URL against the trigger ids in triggers.yml (`worktrain trigger list`)",
    )
    .into_response()
}

async fn receive(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(rt) = st.triggers.clone() else {
        return not_found(&id);
    };
    let limit = st.sup.settings().webhook_body_limit_bytes.max(1024);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return HttpError::http(
                StatusCode::PAYLOAD_TOO_LARGE,
                HttpCode::PayloadTooLarge,
                format!("the webhook body exceeds the limit of {limit} bytes"),
                Retry::AfterFix,
                "raise daemon.webhook_body_limit_bytes in config.yaml if such deliveries are expected",
            )
            .into_response();
        }
    };
    let pairs = headers.iter().filter_map(|(k, v)| {
        v.to_str()
            .ok()
            .map(|v| (k.as_str().to_owned(), v.to_owned()))
    });
    let headers = Headers::new(pairs);
    match rt.ingest(&id, &headers, &bytes).await {
        IngestOutcome::Accepted { delivery } => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"accepted": true, "delivery": delivery})),
        )
            .into_response(),
        IngestOutcome::Duplicate { delivery } => (
            StatusCode::OK,
            axum::Json(json!({"accepted": false, "duplicate": true, "delivery": delivery})),
        )
            .into_response(),
        IngestOutcome::Ping => {
            (StatusCode::OK, axum::Json(json!({"pong": true}))).into_response()
        }
        IngestOutcome::NotFound => not_found(&id),
        IngestOutcome::UnsupportedMediaType(ct) => HttpError::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpCode::UnsupportedMediaType,
            format!("content type `{ct}` is not accepted"),
            Retry::AfterFix,
            "send application/json (GitHub webhooks may also use application/x-www-form-urlencoded)",
        )
        .into_response(),
        IngestOutcome::Rejected(r) => HttpError::http(
            StatusCode::UNAUTHORIZED,
            HttpCode::SignatureRejected,
            r.to_string(),
            Retry::AfterFix,
            "configure the same secret at the sender and in triggers.yml; the decision is in `worktrain trigger log`",
        )
        .into_response(),
        IngestOutcome::BadBody(e) => HttpError::http(
            StatusCode::BAD_REQUEST,
            HttpCode::InvalidPayload,
            e.to_string(),
            Retry::AfterFix,
            "send the event's JSON payload with its event and delivery headers",
        )
        .into_response(),
        IngestOutcome::Unavailable(why) => HttpError::http(
            StatusCode::SERVICE_UNAVAILABLE,
            HttpCode::ShuttingDown,
            format!("the delivery could not be stored: {why}"),
            Retry::Same,
            "redeliver it",
        )
        .into_response(),
    }
}
