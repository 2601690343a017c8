//! Headers every forge shares: `Link` pagination and rate limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Rate-limit headers of an answer (`x-ratelimit-*` on GitHub, `ratelimit-*` on GitLab,
/// `Retry-After` on both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: Option<u64>,
    /// Requests left in the current window (`x-ratelimit-remaining` / `ratelimit-remaining`);
    /// `None` when the forge did not say.
    pub remaining: Option<u64>,
    /// When the window resets (Unix seconds).
    pub reset: Option<u64>,
    /// `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

fn header_u64(h: &http::HeaderMap, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| {
        h.get(*n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    })
}

impl RateLimit {
    /// Read the headers.
    pub fn from_headers(h: &http::HeaderMap) -> Self {
        let mut reset = header_u64(h, &["x-ratelimit-reset", "ratelimit-reset"]);
        // Some recordings carry milliseconds; treat implausibly large values as such.
        if let Some(r) = reset
            && r > 100_000_000_000
        {
            reset = Some(r / 1000);
        }
        Self {
            limit: header_u64(h, &["x-ratelimit-limit", "ratelimit-limit"]),
            remaining: header_u64(h, &["x-ratelimit-remaining", "ratelimit-remaining"]),
            reset,
            retry_after: header_u64(h, &["retry-after"]).map(Duration::from_secs),
        }
    }

    /// Time until the window resets (at least one second; `None` without a reset header).
    pub fn reset_in(&self) -> Option<Duration> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.reset
            .map(|r| Duration::from_secs(r.saturating_sub(now).max(1)))
    }

    /// Whether the window is used up.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(h: &http::HeaderMap) -> Option<String> {
    let link = h.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_next_is_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "link",
            http::HeaderValue::from_static(
                "<https://api.github.com/repositories/1000/issues?per_page=3&page=1>; rel=\"prev\", <https://api.github.com/repositories/1000/issues?per_page=3&page=3>; rel=\"next\", <https://api.github.com/repositories/1000/issues?per_page=3&page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1000/issues?per_page=3&page=3")
        );
        h.insert(
            "link",
            http::HeaderValue::from_static("<https://x/?page=1>; rel=\"first\""),
        );
        assert_eq!(next_link(&h), None);
    }
}
