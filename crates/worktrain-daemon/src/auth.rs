//! Bearer-token authentication. The token is the content of `$WORKTRAIN_HOME/api-token`
//! (written by `worktrain init`, mode 0600). Comparison is constant-time over SHA-256
//! digests, so neither the content nor the length of the token leaks through timing.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::AppState;
use crate::errors::HttpError;

/// The API token, kept as its digest.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

/// The token file is missing, unreadable or empty.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read (missing, permissions, …).
    #[error("cannot read the API token {path}: {source} (run `worktrain init`)")]
    Read {
        /// Path of the token file.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("the API token file {0} is empty (remove it and run `worktrain init`)")]
    Empty(String),
}

impl ApiToken {
    /// A token from its text (surrounding whitespace ignored).
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let t = token.trim();
        if t.is_empty() {
            return Err(TokenError::Empty("<inline>".into()));
        }
        Ok(Self {
            digest: Sha256::digest(t.as_bytes()).into(),
        })
    }

    /// Read the token file.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(&text).map_err(|_| TokenError::Empty(path.display().to_string()))
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(d.ct_eq(&self.digest))
    }
}

/// Middleware: reject requests without the right bearer token with `401 unauthorized`.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let header = req.headers().get(header::AUTHORIZATION);
    let verdict = match header.map(|h| h.to_str()) {
        None => Err("missing `Authorization: Bearer <token>` header"),
        Some(Err(_)) => Err("the Authorization header is not valid text"),
        Some(Ok(v)) => match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                if state.token.matches(token) {
                    Ok(())
                } else {
                    Err("the bearer token does not match this daemon's api-token")
                }
            }
            _ => Err("the Authorization header must use the Bearer scheme"),
        },
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(msg) => HttpError::unauthorized(msg).into_response(),
    }
}
