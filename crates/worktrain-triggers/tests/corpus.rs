//! Every real payload in `../shared/corpora/github-webhooks` and `gitlab-webhooks` is
//! parsed, routed by its event header from `manifest.csv`, signed and verified on its
//! exact bytes; the GitHub signature vectors pass and fail as labelled; wrong secrets,
//! truncated headers and non-JSON bodies are rejected precisely.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use worktrain_triggers::config::GitlabWebhook;
use worktrain_triggers::env::EnvString;
use worktrain_triggers::inbound::{self, InboundError, ItemStatus, parse_body};
use worktrain_triggers::verify::{self, Headers, Rejection, sign_hex};

fn corpora() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora"
    ))
}

fn manifest(dir: &Path, columns: usize) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("manifest.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // Only the last column (source) may contain commas.
            let mut cols: Vec<String> = Vec::new();
            let mut rest = l;
            for _ in 0..columns - 1 {
                match rest.split_once(',') {
                    Some((a, b)) => {
                        cols.push(a.to_owned());
                        rest = b;
                    }
                    None => break,
                }
            }
            cols.push(rest.to_owned());
            cols
        })
        .collect()
}

const SECRET: &str = "It's a Secret to Everybody";

#[test]
fn every_github_payload_is_routed_signed_and_verified() {
    let dir = corpora().join("github-webhooks");
    let rows = manifest(&dir, 4);
    assert!(rows.len() >= 28, "manifest lists {} payloads", rows.len());
    for (i, row) in rows.iter().enumerate() {
        let (file, event, action) = (&row[0], &row[1], &row[2]);
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let sig = format!("sha256={}", sign_hex(SECRET.as_bytes(), &bytes));
        let delivery = format!("d-{i}");
        let headers = Headers::new([
            ("X-GitHub-Event", event.as_str()),
            ("X-GitHub-Delivery", delivery.as_str()),
            ("X-Hub-Signature-256", sig.as_str()),
            ("Content-Type", "application/json"),
        ]);
        verify::github(SECRET, &headers, &bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        // One flipped byte anywhere in the body fails.
        let mut tampered = bytes.clone();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0x01;
        assert_eq!(
            verify::github(SECRET, &headers, &tampered),
            Err(Rejection::Mismatch("X-Hub-Signature-256".into())),
            "{file}"
        );
        assert!(
            verify::github("another secret", &headers, &bytes).is_err(),
            "{file}"
        );
        let payload =
            parse_body(Some("application/json"), &bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let ev = inbound::github(&headers, payload).unwrap();
        assert_eq!(ev.event, *event, "{file}");
        assert_eq!(
            ev.action.as_deref().unwrap_or(""),
            action.as_str(),
            "{file}"
        );
        assert_eq!(ev.delivery_id, delivery);
        assert_eq!(ev.ping, event == "ping", "{file}");
        let repo = ev.payload["repository"]["full_name"]
            .as_str()
            .map(str::to_owned);
        match event.as_str() {
            "issues" | "issue_comment" => {
                let n = ev.payload["issue"]["number"].as_u64().unwrap();
                assert_eq!(
                    ev.source.as_ref().unwrap().as_str(),
                    format!("github:{}#{n}", repo.unwrap()),
                    "{file}"
                );
                assert!(ev.item.is_some(), "{file}");
            }
            "pull_request" => {
                let n = ev.payload["pull_request"]["number"].as_u64().unwrap();
                assert_eq!(
                    ev.source.as_ref().unwrap().as_str(),
                    format!("github:{}#{n}", repo.unwrap()),
                    "{file}"
                );
            }
            "push" => {
                let s = ev.source.as_ref().unwrap().as_str().to_owned();
                assert!(
                    s.starts_with(&format!("github:{}@refs/", repo.unwrap())),
                    "{file}: {s}"
                );
                assert!(ev.item.is_none());
            }
            "ping" => assert!(ev.source.is_none()),
            other => panic!("unexpected event {other} in the manifest"),
        }
        if event == "issue_comment" {
            let c = ev.comment.as_ref().unwrap();
            assert_eq!(
                Some(c.author.as_str()),
                ev.payload["comment"]["user"]["login"].as_str()
            );
            assert!(c.association.is_some(), "{file}");
        }
    }
}

#[test]
fn github_signature_vectors_pass_and_fail_as_labelled() {
    let path = corpora().join("github-webhooks/_deliveries/signature-vectors.json");
    let vectors: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let headers = Headers::new(
            v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
        );
        let body = v["body"].as_str().unwrap().as_bytes();
        let result = verify::github(v["secret"].as_str().unwrap(), &headers, body);
        assert_eq!(
            result.is_ok(),
            v["expect_valid"].as_bool().unwrap(),
            "{name}: {result:?}"
        );
        if name == "snare-form-urlencoded" {
            // The JSON inside the form is read after verifying the raw form bytes.
            let payload = parse_body(headers.get("Content-Type"), body);
            // The form's `payload` is not percent-encoded in this vector; a raw JSON value
            // with newlines still decodes.
            assert!(payload.is_ok(), "{name}: {payload:?}");
            assert_eq!(payload.unwrap()["repository"]["name"], "testrepo");
        }
    }
}

#[test]
fn truncated_and_malformed_signature_headers() {
    let body = b"{}";
    let good = format!("sha256={}", sign_hex(b"k", body));
    for (value, want) in [
        (&good[..good.len() - 1], "expected 64 hex digits"),
        ("sha256=", "expected 64 hex digits"),
        ("sha1=7d38cdd689735b008b3c702edd92eea23791c5f6", "sha256="),
        (
            &good.replace("sha256=", "sha256=zz")[..71],
            "not hexadecimal",
        ),
    ] {
        let h = Headers::new([("X-Hub-Signature-256", value)]);
        let e = verify::github("k", &h, body).unwrap_err();
        assert!(e.to_string().contains(want), "{value}: {e}");
    }
    let none = Headers::new([("X-Hub-Signature", "sha1=00")]);
    assert_eq!(
        verify::github("k", &none, body),
        Err(Rejection::MissingHeader("X-Hub-Signature-256".into()))
    );
}

#[test]
fn the_docs_example_delivery_is_routed_by_its_headers() {
    let text = std::fs::read_to_string(
        corpora().join("github-webhooks/_deliveries/docs-example-delivery.issues.http"),
    )
    .unwrap();
    let (head, body) = text.split_once("\n\n").unwrap();
    let headers = Headers::new(head.lines().skip(1).filter_map(|l| {
        l.split_once(':')
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
    }));
    assert_eq!(headers.get("x-github-event"), Some("issues"));
    assert_eq!(
        headers.get("X-GITHUB-DELIVERY"),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    // The published body is abridged with `...`: not JSON, and not what was signed.
    assert!(matches!(
        parse_body(headers.get("content-type"), body.as_bytes()),
        Err(InboundError::NotJson(_))
    ));
    assert!(verify::github("It's a Secret to Everybody", &headers, body.as_bytes()).is_err());
}

fn gitlab_cfg(token: Option<&str>, signing: Option<&str>) -> GitlabWebhook {
    GitlabWebhook {
        token: token.map(EnvString::literal),
        signing_token: signing.map(EnvString::literal),
        replay_window: Duration::from_secs(300),
        events: Vec::new(),
        projects: Vec::new(),
        commands: None,
    }
}

#[test]
fn every_gitlab_payload_is_routed_and_authenticated() {
    let dir = corpora().join("gitlab-webhooks");
    let rows = manifest(&dir, 7);
    assert!(rows.len() >= 21);
    let key = base64::engine::general_purpose::STANDARD.encode(b"0123456789abcdef0123456789abcdef");
    let signing = format!("whsec_{key}");
    let now = 1_700_000_000i64;
    for (i, row) in rows.iter().enumerate() {
        let (file, header, object_kind, action, noteable) =
            (&row[0], &row[1], &row[2], &row[4], &row[5]);
        let raw = std::fs::read(dir.join(file)).unwrap();
        // The docs delivery wraps the request: its own headers and the body.
        let (bytes, uuid) = if file.contains("delivery-with-headers") {
            let v: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(v["request_headers"]["X-Gitlab-Event"], header.as_str());
            (
                serde_json::to_vec(&v["request_data"]).unwrap(),
                v["request_headers"]["X-Gitlab-Event-UUID"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        } else {
            (raw, format!("uuid-{i}"))
        };
        // Legacy secret token.
        let h = Headers::new([
            ("X-Gitlab-Event", header.as_str()),
            ("X-Gitlab-Event-UUID", uuid.as_str()),
            ("X-Gitlab-Token", "tok-123"),
        ]);
        verify::gitlab(&gitlab_cfg(Some("tok-123"), None), &h, &bytes, now).unwrap();
        assert_eq!(
            verify::gitlab(&gitlab_cfg(Some("tok-124"), None), &h, &bytes, now),
            Err(Rejection::Mismatch("X-Gitlab-Token".into()))
        );
        // Signing token (Standard Webhooks) over the exact bytes.
        let ts = now.to_string();
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(
            b"0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        hmac::Mac::update(&mut mac, format!("{uuid}.{ts}.").as_bytes());
        hmac::Mac::update(&mut mac, &bytes);
        let sig =
            base64::engine::general_purpose::STANDARD.encode(hmac::Mac::finalize(mac).into_bytes());
        let signed = Headers::new([
            ("X-Gitlab-Event", header.to_string()),
            ("webhook-id", uuid.clone()),
            ("webhook-timestamp", ts.clone()),
            ("webhook-signature", format!("v1,{sig}")),
        ]);
        verify::gitlab(&gitlab_cfg(None, Some(&signing)), &signed, &bytes, now)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        verify::gitlab(
            &gitlab_cfg(Some("tok"), Some(&signing)),
            &signed,
            &bytes,
            now,
        )
        .unwrap();
        assert!(
            verify::gitlab(&gitlab_cfg(None, Some(&signing)), &signed, &bytes[1..], now).is_err()
        );
        assert!(matches!(
            verify::gitlab(
                &gitlab_cfg(None, Some(&signing)),
                &signed,
                &bytes,
                now + 3600
            ),
            Err(Rejection::Stale { .. })
        ));
        // Routed by the header.
        let payload = parse_body(Some("application/json"), &bytes).unwrap();
        let ev = inbound::gitlab(&h, payload).unwrap();
        assert_eq!(ev.delivery_id, uuid);
        let kind = ev.payload["object_kind"]
            .as_str()
            .or(ev.payload["event_name"].as_str());
        assert_eq!(kind, Some(object_kind.as_str()), "{file}");
        assert_eq!(
            ev.action.as_deref().unwrap_or(""),
            action.as_str(),
            "{file}"
        );
        let project = ev.payload["project"]["path_with_namespace"].as_str();
        match ev.event.as_str() {
            "merge_request" => match ev.payload["object_attributes"]["iid"].as_u64() {
                Some(iid) => {
                    assert_eq!(
                        ev.source.as_ref().unwrap().as_str(),
                        format!("gitlab:{}!{iid}", project.unwrap())
                    );
                    let item = ev.item.as_ref().unwrap();
                    let state = ev.payload["object_attributes"]["state"].as_str().unwrap();
                    assert_eq!(
                        item.status == ItemStatus::Merged,
                        state == "merged",
                        "{file}"
                    );
                }
                // The group hook sample has keys with trailing spaces (`"iid "`): no
                // identity can be derived, and none is invented.
                None => assert!(ev.source.is_none(), "{file}"),
            },
            "issue" => {
                let iid = ev.payload["object_attributes"]["iid"].as_u64().unwrap();
                assert_eq!(
                    ev.source.as_ref().unwrap().as_str(),
                    format!("gitlab:{}#{iid}", project.unwrap())
                );
            }
            "note" => {
                assert!(ev.comment.is_some());
                match noteable.as_str() {
                    "Issue" | "MergeRequest" => {
                        let s = ev.source.as_ref().unwrap().as_str().to_owned();
                        let sep = if noteable == "Issue" { '#' } else { '!' };
                        assert!(s.contains(sep), "{file}: {s}");
                    }
                    _ => assert!(ev.source.is_none(), "{file}"),
                }
            }
            "push" | "tag_push" => {
                assert!(
                    ev.source.as_ref().unwrap().as_str().starts_with("gitlab:"),
                    "{file}"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn gitlab_without_headers_is_rejected_precisely() {
    let cfg = gitlab_cfg(Some("t"), None);
    let e = verify::gitlab(&cfg, &Headers::default(), b"{}", 0).unwrap_err();
    assert_eq!(e, Rejection::MissingHeader("X-Gitlab-Token".into()));
    let h = Headers::new([("X-Gitlab-Token", "t")]);
    assert_eq!(
        inbound::gitlab(&h, serde_json::json!({})).unwrap_err(),
        InboundError::MissingHeader("X-Gitlab-Event")
    );
}
