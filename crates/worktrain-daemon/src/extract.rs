//! Request extractors whose rejections are precise JSON errors: a malformed body names
//! the line, column and field; an oversized body is a `413 payload_too_large`; a bad
//! session id in the path says what a session id looks like.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use worktrain_core::error::Retry;
use worktrain_core::ids::SessionId;

use crate::api::AppState;
use crate::errors::{HttpCode, HttpError};

/// A JSON request body. An empty body reads as `{}` (so bodies whose fields are all
/// optional may be left out).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

/// Parse JSON bytes into `T`, naming the field and position of the first problem. Every
/// request body of the API is a JSON object: serde would read a struct from an array
/// too (`[]` as "all fields absent"), so anything but an object is refused first.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
        && *first != b'{'
    {
        let what = match first {
            b'[' => "an array",
            b'"' => "a string",
            b't' | b'f' => "a boolean",
            b'n' => "null",
            b'-' | b'0'..=b'9' => "a number",
            _ => "not JSON",
        };
        return Err(HttpError::invalid(
            format!("invalid request body: expected a JSON object (`{{…}}`), got {what}"),
            "send a JSON object (or no body where every field is optional); see docs/api.md",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "invalid JSON"
        } else {
            "invalid request body"
        };
        let at = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        HttpError::invalid(
            format!("{what}{at}: {inner}"),
            "see docs/api.md (or spec/openapi.yaml) for the request body of this route",
        )
    })?;
    de.end().map_err(|e| {
        HttpError::invalid(
            format!("invalid JSON: {e}"),
            "send exactly one JSON document",
        )
    })?;
    Ok(value)
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HttpError::too_large(state.body_limit)
            } else {
                HttpError::invalid(
                    format!("cannot read the request body: {}", r.body_text()),
                    "send the body again",
                )
            }
        })?;
        if !bytes.iter().all(u8::is_ascii_whitespace)
            && let Some(ct) = content_type
        {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(HttpError::http(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    HttpCode::UnsupportedMediaType,
                    format!("the body must be JSON, not `{ct}`"),
                    Retry::AfterFix,
                    "send `Content-Type: application/json`",
                ));
            }
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query-string parameters.
#[derive(Debug, Clone)]
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| QueryArgs(v))
            .map_err(|r| {
                HttpError::invalid(
                    format!("invalid query string: {}", r.body_text()),
                    "see docs/api.md for the query parameters of this route",
                )
            })
    }
}

/// The `{id}` path segment, parsed as a session id.
#[derive(Debug, Clone, Copy)]
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| {
                HttpError::invalid(
                    format!("bad path: {}", r.body_text()),
                    "use /api/v1/sessions/<ses_…>",
                )
            })?;
        parse_session_id(&raw).map(SessionPath)
    }
}

/// Parse a session id from user input.
pub fn parse_session_id(raw: &str) -> Result<SessionId, HttpError> {
    raw.trim().parse::<SessionId>().map_err(|e| {
        HttpError::invalid(
            format!("`{raw}` is not a session id: {e}"),
            "session ids look like ses_01J…; GET /api/v1/sessions lists them",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        n: Option<u32>,
    }

    #[test]
    fn json_errors_name_the_field_and_position() {
        assert!(
            parse_json::<Body>(b"").is_ok(),
            "an empty body reads as {{}}"
        );
        assert!(parse_json::<Body>(b"  \n").is_ok());
        let e = parse_json::<Body>(b"{\"n\": \"x\"}").unwrap_err();
        assert!(
            e.body.message.contains("at `n`") && e.body.message.contains("line 1"),
            "{e:?}"
        );
        let e = parse_json::<Body>(b"{\"n\": 1").unwrap_err();
        assert!(e.body.message.starts_with("invalid JSON"), "{e:?}");
        let e = parse_json::<Body>(b"{} {}").unwrap_err();
        assert!(e.body.message.contains("trailing"), "{e:?}");
        for not_object in [&b"[]"[..], b" [1]", b"\"x\"", b"null", b"1", b"true"] {
            let e = parse_json::<Body>(not_object).unwrap_err();
            assert!(
                e.body.message.contains("expected a JSON object"),
                "{}: {e:?}",
                String::from_utf8_lossy(not_object)
            );
        }
        let e = parse_json::<Body>(b"{\"m\": 1}").unwrap_err();
        assert!(e.body.message.contains("unknown field `m`"), "{e:?}");
    }
}
