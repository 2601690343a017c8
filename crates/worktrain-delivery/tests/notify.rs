//! Notifications over real HTTP on loopback against a fake receiver: the body each kind
//! sends, the signature of the generic webhook, bounded retries on 5xx/429 honouring
//! `Retry-After`, a receiver that is down, the rate limit — and never the URL in a result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use worktrain_core::event::EventBody;
use worktrain_core::run::{NotificationFailure, NotifierKind, NotifyEvent};
use worktrain_delivery::notify::{Delivered, Notice, RateLimiter, Target, notify};
use worktrain_delivery::{RetryPolicy, SIGNATURE_HEADER, sign};
use worktrain_testkit::receiver::{FakeReceiver, Reply};

fn notice(event: NotifyEvent) -> Notice {
    Notice {
        event,
        session: "ses_01J00000000000000000000000".parse().unwrap(),
        workflow: "coding-task".into(),
        goal: "Fix the empty-config panic".into(),
        source: None,
        reason: Some("agent_stopped_early".into()),
        detail: Some("the agent stopped before completing the workflow".into()),
        step: None,
        pr_url: None,
        console_url: "http://127.0.0.1:7878/console/sessions/ses_01J00000000000000000000000".into(),
    }
}

fn target(kind: NotifierKind, url: String) -> Target {
    Target {
        name: "ops".into(),
        kind,
        url,
        secret: (kind == NotifierKind::Webhook).then(|| "n0tify-hmac-key".to_owned()),
        max_per_minute: 60,
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        tries: 3,
        backoff: Duration::from_millis(50),
        max_wait: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn the_generic_webhook_is_signed_over_the_exact_body() {
    let rx = FakeReceiver::start().await.unwrap();
    let t = target(NotifierKind::Webhook, rx.url("/hooks/worktrain"));
    let got = notify(
        &t,
        &notice(NotifyEvent::Failed),
        &RateLimiter::default(),
        &fast(),
    )
    .await;
    assert_eq!(
        got,
        Delivered::Sent {
            status: 200,
            attempts: 1
        }
    );
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hooks/worktrain");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header(SIGNATURE_HEADER),
        Some(sign(b"n0tify-hmac-key", &r.raw).as_str()),
        "the signature verifies over the raw body"
    );
    assert_ne!(
        r.header(SIGNATURE_HEADER),
        Some(sign(b"another-key", &r.raw).as_str())
    );
    assert_eq!(r.body["event"], "failed");
    assert_eq!(r.body["reason"], "agent_stopped_early");
    assert_eq!(
        r.body["links"]["console"],
        notice(NotifyEvent::Failed).console_url
    );
}

#[tokio::test]
async fn slack_and_discord_get_their_own_wire_shapes_unsigned() {
    let rx = FakeReceiver::start().await.unwrap();
    for kind in [NotifierKind::Slack, NotifierKind::Discord] {
        let t = target(kind, rx.url(&format!("/{}", kind.as_str())));
        let got = notify(
            &t,
            &notice(NotifyEvent::Completed),
            &RateLimiter::default(),
            &fast(),
        )
        .await;
        assert!(matches!(got, Delivered::Sent { .. }), "{got:?}");
    }
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].path, "/slack");
    assert!(reqs[0].body["text"].as_str().unwrap().contains("completed"));
    assert_eq!(reqs[0].body["blocks"][0]["type"], "section");
    assert_eq!(reqs[1].path, "/discord");
    assert!(
        reqs[1].body["content"]
            .as_str()
            .unwrap()
            .contains("completed")
    );
    assert!(reqs.iter().all(|r| r.header(SIGNATURE_HEADER).is_none()));
}

#[tokio::test]
async fn a_500_then_a_200_is_retried_once() {
    let rx = FakeReceiver::start().await.unwrap();
    rx.reply_with([Reply::status(500)]);
    let t = target(NotifierKind::Slack, rx.url("/s"));
    let got = notify(
        &t,
        &notice(NotifyEvent::Completed),
        &RateLimiter::default(),
        &fast(),
    )
    .await;
    assert_eq!(
        got,
        Delivered::Sent {
            status: 200,
            attempts: 2
        }
    );
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].raw, reqs[1].raw, "the same message again");
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let rx = FakeReceiver::start().await.unwrap();
    rx.reply_with([Reply::status(429).with_header("Retry-After", "1")]);
    let t = target(NotifierKind::Discord, rx.url("/d"));
    let start = Instant::now();
    let got = notify(
        &t,
        &notice(NotifyEvent::Completed),
        &RateLimiter::default(),
        &fast(),
    )
    .await;
    assert_eq!(
        got,
        Delivered::Sent {
            status: 200,
            attempts: 2
        }
    );
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "waited {:?}, not the 50 ms backoff",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_longest_wait_ends_the_tries() {
    let rx = FakeReceiver::start().await.unwrap();
    rx.reply_with([Reply::status(429).with_header("Retry-After", "3600")]);
    let t = target(NotifierKind::Slack, rx.url("/s"));
    let got = notify(
        &t,
        &notice(NotifyEvent::Completed),
        &RateLimiter::default(),
        &fast(),
    )
    .await;
    assert_eq!(
        got,
        Delivered::Failed {
            reason: NotificationFailure::Rejected,
            status: Some(429),
            attempts: 1,
            message: "the receiver answered 429".into(),
        }
    );
}

#[tokio::test]
async fn persistent_5xx_is_bounded_and_4xx_is_not_retried() {
    let rx = FakeReceiver::start().await.unwrap();
    rx.reply_with([Reply::status(503), Reply::status(502), Reply::status(500)]);
    let t = target(NotifierKind::Slack, rx.url("/s"));
    let got = notify(
        &t,
        &notice(NotifyEvent::Completed),
        &RateLimiter::default(),
        &fast(),
    )
    .await;
    assert!(
        matches!(
            got,
            Delivered::Failed {
                reason: NotificationFailure::Rejected,
                status: Some(500),
                attempts: 3,
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(rx.requests().len(), 3);
    rx.reply_with([Reply::status(404)]);
    let got = notify(
        &t,
        &notice(NotifyEvent::Completed),
        &RateLimiter::default(),
        &fast(),
    )
    .await;
    assert!(
        matches!(
            got,
            Delivered::Failed {
                status: Some(404),
                attempts: 1,
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(rx.requests().len(), 4);
}

#[tokio::test]
async fn a_receiver_that_is_down_is_unreachable_and_the_url_is_not_in_the_result() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/services/T0/B0/s3cretpath");
    let t = target(NotifierKind::Slack, url);
    let got = notify(
        &t,
        &notice(NotifyEvent::Completed),
        &RateLimiter::default(),
        &fast(),
    )
    .await;
    let Delivered::Failed {
        reason,
        status,
        attempts,
        message,
    } = &got
    else {
        panic!("{got:?}");
    };
    assert_eq!(*reason, NotificationFailure::Unreachable);
    assert_eq!(*status, None);
    assert_eq!(*attempts, 3, "network errors are retried, boundedly");
    let event = format!("{:?}", got.clone().event("ops", NotifyEvent::Completed));
    for shown in [message.as_str(), event.as_str()] {
        assert!(!shown.contains("s3cretpath"), "{shown}");
        assert!(!shown.contains(&port.to_string()), "{shown}");
    }
}

#[tokio::test]
async fn beyond_the_rate_limit_a_message_is_dropped_and_says_why() {
    let rx = FakeReceiver::start().await.unwrap();
    let mut t = target(NotifierKind::Slack, rx.url("/s"));
    t.max_per_minute = 2;
    let limiter = RateLimiter::default();
    let n = notice(NotifyEvent::Completed);
    assert!(matches!(
        notify(&t, &n, &limiter, &fast()).await,
        Delivered::Sent { .. }
    ));
    assert!(matches!(
        notify(&t, &n, &limiter, &fast()).await,
        Delivered::Sent { .. }
    ));
    let third = notify(&t, &n, &limiter, &fast()).await;
    assert_eq!(rx.requests().len(), 2, "the third was not sent");
    let body = third.event("ops", NotifyEvent::Completed);
    let EventBody::NotificationFailed {
        notifier,
        reason,
        attempts,
        message,
        ..
    } = &body
    else {
        panic!("{body:?}");
    };
    assert_eq!(notifier, "ops");
    assert_eq!(*reason, NotificationFailure::RateLimited);
    assert_eq!(*attempts, 0);
    assert!(
        message.contains("more than 2 messages a minute"),
        "{message}"
    );
}
