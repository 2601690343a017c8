//! Webhook authentication on the exact bytes received, in constant time.
//!
//! * GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//! * GitLab: `X-Gitlab-Token: <secret token>` (compared over SHA-256 digests, so neither
//!   content nor length leaks), and/or signing tokens — the Standard Webhooks scheme:
//!   `webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`
//!   with the key the base64 after `whsec_`, and a timestamp inside the replay window.
//! * Generic: a configurable header with the hex HMAC-SHA256 of the body (`sha256=`
//!   tolerated), or of `<timestamp>.<body>` when a timestamp header is configured.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{GenericWebhook, GitlabWebhook};

type HmacSha256 = Hmac<Sha256>;

/// Request headers, names compared case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// From `(name, value)` pairs.
    pub fn new<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header, lower-case names.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Why a delivery was not authenticated. The message never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The header is absent.
    #[error("missing `{0}` header")]
    MissingHeader(String),
    /// The header is present but not in the expected form.
    #[error("malformed `{header}` header: {problem}")]
    Malformed {
        /// Name of the malformed header.
        header: String,
        /// What is wrong.
        problem: String,
    },
    /// The signature or token does not match.
    #[error("`{0}` does not match (wrong secret, or the body was changed)")]
    Mismatch(String),
    /// The timestamp is outside the replay window.
    #[error("timestamp {timestamp} is {skew_secs} s away from now (replay window {window_secs} s)")]
    Stale {
        /// The timestamp sent.
        timestamp: i64,
        /// Distance from now.
        skew_secs: i64,
        /// The replay window: the largest distance from now accepted, in seconds.
        window_secs: u64,
    },
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
    for p in parts {
        mac.update(p);
    }
    mac
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // `Hmac::new_from_slice` accepts every key length; keep a total function anyway.
    #[allow(clippy::expect_used)]
    <HmacSha256 as Mac>::new_from_slice(&[0u8; 32]).expect("32-byte HMAC key")
}

/// The hex signature GitHub would send for `body` (tests, `trigger test`).
pub fn sign_hex(secret: &[u8], body: &[u8]) -> String {
    hex::encode(hmac(secret, &[body]).finalize().into_bytes())
}

fn check_hex(header: &str, value: &str, key: &[u8], parts: &[&[u8]]) -> Result<(), Rejection> {
    let hexpart = value.trim();
    let hexpart = hexpart.strip_prefix("sha256=").unwrap_or(hexpart);
    if hexpart.len() != 64 {
        return Err(Rejection::Malformed {
            header: header.to_owned(),
            problem: format!("expected 64 hex digits, got {} characters", hexpart.len()),
        });
    }
    let sent = hex::decode(hexpart).map_err(|_| Rejection::Malformed {
        header: header.to_owned(),
        problem: "not hexadecimal".into(),
    })?;
    hmac(key, parts)
        .verify_slice(&sent)
        .map_err(|_| Rejection::Mismatch(header.to_owned()))
}

/// GitHub: `X-Hub-Signature-256`.
pub fn github(secret: &str, headers: &Headers, body: &[u8]) -> Result<(), Rejection> {
    const H: &str = "X-Hub-Signature-256";
    let value = headers
        .get(H)
        .ok_or_else(|| Rejection::MissingHeader(H.into()))?;
    if !value.trim().starts_with("sha256=") {
        return Err(Rejection::Malformed {
            header: H.into(),
            problem: "expected `sha256=<hex>`".into(),
        });
    }
    check_hex(H, value, secret.as_bytes(), &[body])
}

/// Constant-time equality of two secrets (over their SHA-256 digests: the length of the
/// expected one does not leak either).
pub fn same_secret(expected: &str, given: &str) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.ct_eq(&b).into()
}

fn timestamp(header: &str, value: &str, now_secs: i64, window: Duration) -> Result<i64, Rejection> {
    let ts: i64 = value.trim().parse().map_err(|_| Rejection::Malformed {
        header: header.to_owned(),
        problem: "expected Unix seconds".into(),
    })?;
    let skew = (now_secs - ts).abs();
    if u64::try_from(skew).unwrap_or(u64::MAX) > window.as_secs() {
        return Err(Rejection::Stale {
            timestamp: ts,
            skew_secs: skew,
            window_secs: window.as_secs(),
        });
    }
    Ok(ts)
}

/// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
pub fn standard_webhooks(
    secret: &str,
    headers: &Headers,
    body: &[u8],
    now_secs: i64,
    window: Duration,
) -> Result<(), Rejection> {
    let get = |h: &str| {
        headers
            .get(h)
            .ok_or_else(|| Rejection::MissingHeader(h.into()))
    };
    let id = get("webhook-id")?;
    let ts_text = get("webhook-timestamp")?;
    let sigs = get("webhook-signature")?;
    timestamp("webhook-timestamp", ts_text, now_secs, window)?;
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| Rejection::Malformed {
                header: "signing_token".into(),
                problem: "the configured `whsec_` secret is not base64".into(),
            })?,
        None => secret.as_bytes().to_vec(),
    };
    let expected = hmac(
        &key,
        &[id.as_bytes(), b".", ts_text.trim().as_bytes(), b".", body],
    )
    .finalize()
    .into_bytes();
    let mut any = false;
    for sig in sigs.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        any = true;
        if let Ok(sent) = base64::engine::general_purpose::STANDARD.decode(b64)
            && bool::from(sent.as_slice().ct_eq(expected.as_slice()))
        {
            return Ok(());
        }
    }
    if !any {
        return Err(Rejection::Malformed {
            header: "webhook-signature".into(),
            problem: "no `v1,<base64>` signature".into(),
        });
    }
    Err(Rejection::Mismatch("webhook-signature".into()))
}

/// GitLab: a signing token when configured and the delivery is signed, else the
/// `X-Gitlab-Token`.
pub fn gitlab(
    cfg: &GitlabWebhook,
    headers: &Headers,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Rejection> {
    if let Some(signing) = &cfg.signing_token
        && (headers.get("webhook-signature").is_some() || cfg.token.is_none())
    {
        return standard_webhooks(signing.value(), headers, body, now_secs, cfg.replay_window);
    }
    let Some(token) = &cfg.token else {
        return Err(Rejection::MissingHeader("webhook-signature".into()));
    };
    const H: &str = "X-Gitlab-Token";
    let given = headers
        .get(H)
        .ok_or_else(|| Rejection::MissingHeader(H.into()))?;
    if same_secret(token.value(), given) {
        Ok(())
    } else {
        Err(Rejection::Mismatch(H.into()))
    }
}

/// A generic webhook.
pub fn generic(
    cfg: &GenericWebhook,
    headers: &Headers,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Rejection> {
    let value = headers
        .get(&cfg.signature_header)
        .ok_or_else(|| Rejection::MissingHeader(cfg.signature_header.clone()))?;
    let key = cfg.secret.value().as_bytes();
    match &cfg.timestamp_header {
        None => check_hex(&cfg.signature_header, value, key, &[body]),
        Some(th) => {
            let ts_text = headers
                .get(th)
                .ok_or_else(|| Rejection::MissingHeader(th.clone()))?;
            timestamp(th, ts_text, now_secs, cfg.replay_window)?;
            check_hex(
                &cfg.signature_header,
                value,
                key,
                &[ts_text.trim().as_bytes(), b".", body],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_docs_vector() {
        // docs.github.com "Testing the webhook payload validation".
        let h = Headers::new([(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(
            github("It's a Secret to Everybody", &h, b"Hello, World!"),
            Ok(())
        );
        assert_eq!(
            github("It's a Secret to Everybody!", &h, b"Hello, World!"),
            Err(Rejection::Mismatch("X-Hub-Signature-256".into()))
        );
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        // The example from the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let h = Headers::new([
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let window = Duration::from_secs(300);
        assert_eq!(
            standard_webhooks(secret, &h, body, 1614265330, window),
            Ok(())
        );
        assert!(matches!(
            standard_webhooks(secret, &h, body, 1614265330 + 301, window),
            Err(Rejection::Stale { .. })
        ));
        assert_eq!(
            standard_webhooks(secret, &h, br#"{"test": 2432232315}"#, 1614265330, window),
            Err(Rejection::Mismatch("webhook-signature".into()))
        );
    }

    #[test]
    fn secrets_compare_by_digest() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("abc", ""));
    }
}
