//! Every HTTP error is one JSON body: `{code, message, retry, hint}` — the engine's
//! [`ApiError`] shape. Engine errors keep their code; HTTP-level failures (no or wrong
//! token, unknown route, wrong method, body too large, timeout, unsupported media type)
//! get codes of their own, listed in [`HttpCode`] and in `docs/api.md`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use worktrain_core::error::{ApiError, ErrorCode, Retry};

/// Codes of failures that happen before a request reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpCode {
    /// No `Authorization: Bearer …` header, or the token does not match.
    Unauthorized,
    /// No route at this path.
    RouteNotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The body is larger than `daemon.body_limit_bytes`.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The request took longer than `daemon.request_timeout_secs`.
    RequestTimeout,
    /// The daemon is shutting down.
    ShuttingDown,
    /// `POST /webhooks/<id>` for an id that is not a webhook trigger.
    TriggerNotFound,
    /// A webhook's signature or token is missing, malformed, wrong or stale.
    SignatureRejected,
    /// An authenticated webhook whose body is not a usable event.
    InvalidPayload,
}

impl HttpCode {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpCode::Unauthorized => "unauthorized",
            HttpCode::RouteNotFound => "route_not_found",
            HttpCode::MethodNotAllowed => "method_not_allowed",
            HttpCode::PayloadTooLarge => "payload_too_large",
            HttpCode::UnsupportedMediaType => "unsupported_media_type",
            HttpCode::RequestTimeout => "request_timeout",
            HttpCode::ShuttingDown => "shutting_down",
            HttpCode::TriggerNotFound => "trigger_not_found",
            HttpCode::SignatureRejected => "signature_rejected",
            HttpCode::InvalidPayload => "invalid_payload",
        }
    }
}

/// The code field of an error body: an engine code or an HTTP-level one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Code {
    /// From the engine.
    Api(ErrorCode),
    /// From the HTTP layer.
    Http(HttpCode),
}

impl Code {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Api(c) => c.as_str(),
            Code::Http(c) => c.as_str(),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: Code,
    /// What went wrong.
    pub message: String,
    /// Whether and how to retry.
    pub retry: Retry,
    /// What to do next.
    pub hint: String,
}

/// An error response: status plus [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct HttpError {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body: error code, message, whether and when to retry, what to do.
    pub body: ErrorBody,
}

impl HttpError {
    /// An HTTP-level error.
    pub fn http(
        status: StatusCode,
        code: HttpCode,
        message: impl Into<String>,
        retry: Retry,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: Code::Http(code),
                message: message.into(),
                retry,
                hint: hint.into(),
            },
        }
    }

    /// `400 invalid_input`.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError::invalid_input(message, hint).into()
    }

    /// `401 unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::http(
            StatusCode::UNAUTHORIZED,
            HttpCode::Unauthorized,
            message,
            Retry::AfterFix,
            "send `Authorization: Bearer <token>` with the contents of $WORKTRAIN_HOME/api-token",
        )
    }

    /// `404 route_not_found`.
    pub fn route_not_found(path: &str) -> Self {
        Self::http(
            StatusCode::NOT_FOUND,
            HttpCode::RouteNotFound,
            format!("no route {path}"),
            Retry::Never,
            "see docs/api.md or spec/openapi.yaml for the routes (all under /api/v1)",
        )
    }

    /// `405 method_not_allowed`.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::http(
            StatusCode::METHOD_NOT_ALLOWED,
            HttpCode::MethodNotAllowed,
            format!("{method} is not allowed on {path}"),
            Retry::Never,
            "see docs/api.md for the methods each route accepts",
        )
    }

    /// `413 payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            HttpCode::PayloadTooLarge,
            format!("the request body exceeds the limit of {limit} bytes"),
            Retry::AfterFix,
            "send a smaller body, or raise daemon.body_limit_bytes in config.yaml",
        )
    }

    /// `503 shutting_down`.
    pub fn shutting_down() -> Self {
        Self::http(
            StatusCode::SERVICE_UNAVAILABLE,
            HttpCode::ShuttingDown,
            "the daemon is shutting down",
            Retry::Same,
            "retry once the daemon is back",
        )
    }
}

/// The HTTP status for an engine error code.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::SessionNotFound | ErrorCode::WorkflowNotFound => StatusCode::NOT_FOUND,
        ErrorCode::TokenMalformed
        | ErrorCode::TokenBadSignature
        | ErrorCode::TokenUnknownKey
        | ErrorCode::TokenRetiredKey
        | ErrorCode::TokenNeverIssued
        | ErrorCode::TokenWrongKind
        | ErrorCode::WorkflowInvalid
        | ErrorCode::NotesTooLarge
        | ErrorCode::ContextTooLarge
        | ErrorCode::ArtifactTooLarge
        | ErrorCode::ReservedContextKey
        | ErrorCode::InvalidInput
        | ErrorCode::InvalidRewindTarget => StatusCode::BAD_REQUEST,
        ErrorCode::TokenStale
        | ErrorCode::TokenConflict
        | ErrorCode::SessionComplete
        | ErrorCode::SessionParked
        | ErrorCode::NotParked => StatusCode::CONFLICT,
        ErrorCode::Contention | ErrorCode::DaemonUnreachable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::WorkflowPinMissing
        | ErrorCode::StoreFailure
        | ErrorCode::IntegrityFailure
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self {
            status: status_for(e.code),
            body: ErrorBody {
                code: Code::Api(e.code),
                message: e.message,
                retry: e.retry,
                hint: e.hint,
            },
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let bytes = serde_json::to_vec(&self.body).unwrap_or_else(|_| {
            br#"{"code":"internal","message":"error serialization failed","retry":"never","hint":""}"#.to_vec()
        });
        let mut resp = (self.status, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.body.retry == Retry::Same
            && matches!(
                self.status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            )
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"worktrain\""),
            );
        }
        resp
    }
}

/// What API handlers return: their answer, or an [`HttpError`] rendered as a JSON error
/// response.
pub type ApiResult<T> = Result<T, HttpError>;
