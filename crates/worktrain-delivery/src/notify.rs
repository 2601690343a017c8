//! Notifications: one concise message about a session's moment (completed, failed,
//! waiting for approval, delivery failed) to a Slack or Discord incoming webhook, or a
//! signed JSON document to any endpoint — rate-limited per notifier, retried a bounded
//! number of times on 5xx/429 (honouring `Retry-After`) and on network errors, and
//! **never fatal**: the caller records the [`Delivered`] result as an event and moves on.
//!
//! Nothing here logs or returns a notifier's URL or secret: a Slack or Discord webhook
//! URL is itself a credential. Results name the notifier by its configured name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::{info, warn};
use worktrain_core::event::EventBody;
use worktrain_core::ids::SessionId;
use worktrain_core::run::{NotificationFailure, NotifierKind, NotifyEvent};

use crate::{RetryPolicy, http_client, post_json};

/// Discord refuses a `content` longer than this.
pub const DISCORD_MAX: usize = 2000;
/// Slack truncates a section block's text beyond this.
pub const SLACK_SECTION_MAX: usize = 3000;
/// Longest goal shown in a message.
const GOAL_MAX: usize = 300;
/// Longest failure detail shown in a message.
const DETAIL_MAX: usize = 600;

/// What a message is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The moment of the run being told (completed, failed, waiting for approval, delivery
    /// failed).
    pub event: NotifyEvent,
    /// The session the notice is about.
    pub session: SessionId,
    /// Its workflow id.
    pub workflow: String,
    /// The session's goal, as the dispatcher wrote it.
    pub goal: String,
    /// The outside item it works on (`github:acme/widgets#12`).
    pub source: Option<String>,
    /// The failure reason's wire name (`agent_stopped_early`, `delivery_failed`).
    pub reason: Option<String>,
    /// What happened, for humans (the run's failure detail).
    pub detail: Option<String>,
    /// The step waiting for approval.
    pub step: Option<String>,
    /// The pull/merge request, when delivery opened one.
    pub pr_url: Option<String>,
    /// The session in the console.
    pub console_url: String,
}

/// One notifier, resolved: where and how to post. Its `Debug` hides URL and secret.
#[derive(Clone)]
pub struct Target {
    /// Its configured name (what events and logs show).
    pub name: String,
    /// The message format.
    pub kind: NotifierKind,
    /// The webhook URL (a credential).
    pub url: String,
    /// The HMAC key (`webhook` notifiers).
    pub secret: Option<String>,
    /// Messages per minute at most.
    pub max_per_minute: u32,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("max_per_minute", &self.max_per_minute)
            .finish_non_exhaustive()
    }
}

/// The result of notifying one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The receiver accepted it (2xx).
    Sent {
        /// The HTTP status the receiver answered with.
        status: u16,
        /// HTTP requests made, retries included (1 when the first one was accepted).
        attempts: u32,
    },
    /// It was not delivered.
    Failed {
        /// What kind of failure ended the tries (rejected, unreachable, …).
        reason: NotificationFailure,
        /// The receiver's last status, when it answered.
        status: Option<u16>,
        /// HTTP requests made before giving up, retries included.
        attempts: u32,
        /// For humans; never the URL.
        message: String,
    },
}

impl Delivered {
    /// The event recording this result on the session.
    pub fn event(self, notifier: &str, event: NotifyEvent) -> EventBody {
        match self {
            Delivered::Sent { status, attempts } => EventBody::NotificationSent {
                notifier: notifier.to_owned(),
                event,
                status,
                attempts,
            },
            Delivered::Failed {
                reason,
                status,
                attempts,
                message,
            } => EventBody::NotificationFailed {
                notifier: notifier.to_owned(),
                event,
                reason,
                status,
                attempts,
                message,
            },
        }
    }
}

/// Token buckets per notifier name: up to `max_per_minute` messages at once, refilled
/// evenly over a minute. Lives as long as the daemon (a restart refills them).
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Take one message's token for `name` now; `false`: the limit is exhausted.
    pub fn try_take(&self, name: &str, max_per_minute: u32) -> bool {
        self.try_take_at(name, max_per_minute, Instant::now())
    }

    fn try_take_at(&self, name: &str, max_per_minute: u32, now: Instant) -> bool {
        let cap = f64::from(max_per_minute.max(1));
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = buckets.entry(name.to_owned()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        // A reload may lower the limit: never hold more than the current capacity.
        b.tokens = (b.tokens + elapsed * cap / 60.0).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Shorten `s` to at most `max` characters, marking the cut with `…`.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line: newlines in user text would break the message's layout.
fn one_line(s: &str, max: usize) -> String {
    clip(&s.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

/// The headline of a notice, plain.
fn headline(n: &Notice) -> String {
    match n.event {
        NotifyEvent::Completed => format!("✅ worktrain session {} completed", n.session),
        NotifyEvent::Failed => format!(
            "❌ worktrain session {} failed{}",
            n.session,
            n.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        NotifyEvent::WaitingForApproval => format!(
            "⏸️ worktrain session {} is waiting for approval{}",
            n.session,
            n.step
                .as_deref()
                .map(|s| format!(" at step {s}"))
                .unwrap_or_default()
        ),
        NotifyEvent::DeliveryFailed => {
            format!("⚠️ worktrain session {}: delivery failed", n.session)
        }
    }
}

/// The lines of a message: `(label, value)` pairs, user text already clipped.
fn lines(n: &Notice) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("Workflow", n.workflow.clone()),
        ("Goal", one_line(&n.goal, GOAL_MAX)),
    ];
    if let Some(s) = &n.source {
        out.push(("Source", one_line(s, 200)));
    }
    if let Some(d) = &n.detail {
        out.push(("Why", one_line(d, DETAIL_MAX)));
    }
    out
}

/// The message as plain text (Slack's notification fallback, the webhook's `text`).
pub fn plain_text(n: &Notice) -> String {
    let mut s = headline(n);
    for (label, value) in lines(n) {
        s.push_str(&format!("\n{label}: {value}"));
    }
    if let Some(pr) = &n.pr_url {
        s.push_str(&format!("\nPull request: {pr}"));
    }
    s.push_str(&format!("\nConsole: {}", n.console_url));
    s
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook body: `text` (the notification's fallback) and one section
/// block in mrkdwn with the links.
pub fn slack_body(n: &Notice) -> Value {
    let mut md = format!("*{}*", slack_escape(&headline(n)));
    for (label, value) in lines(n) {
        md.push_str(&format!("\n*{label}:* {}", slack_escape(&value)));
    }
    let mut links = Vec::new();
    if let Some(pr) = &n.pr_url {
        links.push(format!("<{pr}|Pull request>"));
    }
    links.push(format!("<{}|Open in the console>", n.console_url));
    let links = links.join(" · ");
    // The links go last and are never cut.
    let room = SLACK_SECTION_MAX.saturating_sub(links.chars().count() + 1);
    let md = format!("{}\n{links}", clip(&md, room));
    json!({
        "text": clip(&plain_text(n), SLACK_SECTION_MAX),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": md}}],
    })
}

/// A Discord webhook body: `content` within Discord's 2000 characters (links kept),
/// mentions disabled so a goal saying `@everyone` pings nobody.
pub fn discord_body(n: &Notice) -> Value {
    let mut head = format!("**{}**", headline(n));
    for (label, value) in lines(n) {
        head.push_str(&format!("\n**{label}:** {value}"));
    }
    let mut links = Vec::new();
    if let Some(pr) = &n.pr_url {
        links.push(format!("Pull request: <{pr}>"));
    }
    links.push(format!("Console: <{}>", n.console_url));
    let links = links.join("\n");
    let room = DISCORD_MAX.saturating_sub(links.chars().count() + 1);
    let content = clip(&format!("{}\n{links}", clip(&head, room)), DISCORD_MAX);
    json!({
        "content": content,
        "allowed_mentions": {"parse": []},
    })
}

/// The generic webhook's JSON document.
pub fn webhook_body(n: &Notice) -> Value {
    json!({
        "event": n.event.as_str(),
        "session_id": n.session.to_string(),
        "workflow": n.workflow,
        "goal": n.goal,
        "source": n.source,
        "reason": n.reason,
        "detail": n.detail,
        "step": n.step,
        "links": {
            "console": n.console_url,
            "pull_request": n.pr_url,
        },
        "text": plain_text(n),
    })
}

/// The body `kind` sends for `n`.
pub fn body_for(kind: NotifierKind, n: &Notice) -> Value {
    match kind {
        NotifierKind::Slack => slack_body(n),
        NotifierKind::Discord => discord_body(n),
        NotifierKind::Webhook => webhook_body(n),
    }
}

/// A reqwest error's message without the URL it carries.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Notify `target` about `notice`: rate limit first, then POST with bounded retries on
/// 5xx, 429 and network errors (a `Retry-After` longer than `retry.max_wait` ends the
/// tries). Never panics, never returns the URL.
pub async fn notify(
    target: &Target,
    notice: &Notice,
    limiter: &RateLimiter,
    retry: &RetryPolicy,
) -> Delivered {
    let event = notice.event.as_str();
    if !limiter.try_take(&target.name, target.max_per_minute) {
        warn!(session_id = %notice.session, notifier = %target.name, event, "notification dropped: rate limit exhausted");
        return Delivered::Failed {
            reason: NotificationFailure::RateLimited,
            status: None,
            attempts: 0,
            message: format!(
                "dropped: more than {} messages a minute to `{}`",
                target.max_per_minute, target.name
            ),
        };
    }
    let result = post_with_retries(target, notice, retry).await;
    match &result {
        Delivered::Sent { status, attempts } => {
            info!(session_id = %notice.session, notifier = %target.name, event, status, attempts, "notification sent");
        }
        Delivered::Failed {
            reason,
            status,
            attempts,
            message,
        } => {
            warn!(session_id = %notice.session, notifier = %target.name, event, reason = reason.as_str(), status, attempts, %message, "notification failed");
        }
    }
    result
}

async fn post_with_retries(target: &Target, notice: &Notice, retry: &RetryPolicy) -> Delivered {
    let body = match serde_json::to_vec(&body_for(target.kind, notice)) {
        Ok(b) => b,
        Err(e) => {
            return Delivered::Failed {
                reason: NotificationFailure::Rejected,
                status: None,
                attempts: 0,
                message: format!("the message could not be encoded: {e}"),
            };
        }
    };
    let client = match http_client(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            return Delivered::Failed {
                reason: NotificationFailure::Unreachable,
                status: None,
                attempts: 0,
                message: describe(e),
            };
        }
    };
    let tries = retry.tries.max(1);
    let mut backoff = retry.backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (failure, wait) =
            match post_json(&client, &target.url, target.secret.as_deref(), body.clone()).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    return Delivered::Sent {
                        status: a.status,
                        attempts,
                    };
                }
                Ok(a) => {
                    let failure = Delivered::Failed {
                        reason: NotificationFailure::Rejected,
                        status: Some(a.status),
                        attempts,
                        message: format!("the receiver answered {}", a.status),
                    };
                    if !(a.status >= 500 || a.status == 429) {
                        return failure;
                    }
                    (failure, a.retry_after.unwrap_or(backoff))
                }
                Err(e) => (
                    Delivered::Failed {
                        reason: NotificationFailure::Unreachable,
                        status: None,
                        attempts,
                        message: describe(e),
                    },
                    backoff,
                ),
            };
        if attempts >= tries || wait > retry.max_wait {
            return failure;
        }
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(retry.max_wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: NotifyEvent) -> Notice {
        Notice {
            event,
            session: "ses_01J00000000000000000000000".parse().unwrap(),
            workflow: "coding-task".into(),
            goal: "Fix the empty-config panic".into(),
            source: Some("github:acme/widgets#12".into()),
            reason: None,
            detail: None,
            step: None,
            pr_url: Some("https://github.com/acme/widgets/pull/13".into()),
            console_url: "http://127.0.0.1:7878/console/sessions/ses_01J00000000000000000000000"
                .into(),
        }
    }

    #[test]
    fn slack_message_names_the_session_and_links_the_pull_request_and_console() {
        let n = notice(NotifyEvent::Completed);
        let b = slack_body(&n);
        let md = b["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            md.starts_with(&format!("*✅ worktrain session {} completed*", n.session)),
            "{md}"
        );
        assert!(md.contains("*Workflow:* coding-task"), "{md}");
        assert!(md.contains("*Source:* github:acme/widgets#12"), "{md}");
        assert!(
            md.contains("<https://github.com/acme/widgets/pull/13|Pull request>"),
            "{md}"
        );
        assert!(md.contains(&format!("<{}|Open in the console>", n.console_url)));
        assert!(b["text"].as_str().unwrap().contains("Console: http://"));
    }

    #[test]
    fn slack_escapes_control_characters_of_user_text() {
        let mut n = notice(NotifyEvent::Failed);
        n.goal = "make <a> & <b>".into();
        let md = slack_body(&n)["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(md.contains("make &lt;a&gt; &amp; &lt;b&gt;"), "{md}");
    }

    #[test]
    fn discord_content_stays_within_2000_characters_and_keeps_its_links() {
        let mut n = notice(NotifyEvent::Failed);
        n.goal = "g".repeat(5000);
        n.detail = Some("d ".repeat(5000));
        n.source = Some("s".repeat(5000));
        n.reason = Some("agent_stopped_early".into());
        let b = discord_body(&n);
        let c = b["content"].as_str().unwrap();
        assert!(c.chars().count() <= DISCORD_MAX, "{}", c.chars().count());
        assert!(c.contains("(agent_stopped_early)"), "{c}");
        assert!(c.ends_with(&format!("Console: <{}>", n.console_url)), "{c}");
        assert!(c.contains("Pull request: <https://github.com/acme/widgets/pull/13>"));
        assert_eq!(b["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn slack_section_stays_within_its_limit() {
        let mut n = notice(NotifyEvent::Failed);
        n.goal = "<".repeat(5000);
        n.detail = Some("&".repeat(5000));
        let b = slack_body(&n);
        let md = b["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(md.chars().count() <= SLACK_SECTION_MAX);
        assert!(md.ends_with("|Open in the console>"), "{md}");
        assert!(b["text"].as_str().unwrap().chars().count() <= SLACK_SECTION_MAX);
    }

    #[test]
    fn webhook_document_carries_event_session_and_links() {
        let mut n = notice(NotifyEvent::WaitingForApproval);
        n.step = Some("review-plan".into());
        n.pr_url = None;
        let b = webhook_body(&n);
        assert_eq!(b["event"], "waiting_for_approval");
        assert_eq!(b["session_id"], n.session.to_string());
        assert_eq!(b["step"], "review-plan");
        assert_eq!(b["links"]["console"], n.console_url.as_str());
        assert_eq!(b["links"]["pull_request"], Value::Null);
        assert!(
            b["text"]
                .as_str()
                .unwrap()
                .contains("waiting for approval at step review-plan")
        );
    }

    #[test]
    fn every_event_has_its_own_headline() {
        let heads: Vec<String> = NotifyEvent::ALL
            .iter()
            .map(|e| headline(&notice(*e)))
            .collect();
        assert!(heads[0].contains("completed"));
        assert!(heads[1].contains("failed"));
        assert!(heads[2].contains("waiting for approval"));
        assert!(heads[3].contains("delivery failed"));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refills_evenly() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        assert!(l.try_take_at("slack", 2, t0));
        assert!(l.try_take_at("slack", 2, t0));
        assert!(!l.try_take_at("slack", 2, t0), "burst of 2 exhausted");
        assert!(l.try_take_at("other", 2, t0), "buckets are per notifier");
        assert!(
            !l.try_take_at("slack", 2, t0 + Duration::from_secs(20)),
            "2/min refills one every 30 s"
        );
        assert!(l.try_take_at("slack", 2, t0 + Duration::from_secs(31)));
    }

    #[test]
    fn debug_of_a_target_shows_neither_url_nor_secret() {
        let t = Target {
            name: "ops".into(),
            kind: NotifierKind::Webhook,
            url: "https://hooks.example/T0KEN".into(),
            secret: Some("hmac-key".into()),
            max_per_minute: 5,
        };
        let d = format!("{t:?}");
        assert!(!d.contains("T0KEN") && !d.contains("hmac-key"), "{d}");
    }
}
