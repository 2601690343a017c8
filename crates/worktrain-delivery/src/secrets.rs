//! The secret scan of a delivered diff: common token formats, private keys, and
//! high-entropy values assigned to secret-looking keys in configuration files. A finding
//! names the file, the line and the rule — never the matched value, so it can be
//! recorded and shown anywhere.

use std::sync::OnceLock;

use regex::Regex;
use worktrain_core::event::SecretFinding;

/// Token formats with a recognisable shape: (rule, pattern).
const RULES: &[(&str, &str)] = &[
    (
        "private_key",
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY( BLOCK)?-----",
    ),
    ("aws_access_key_id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),
    (
        "github_fine_grained_token",
        r"\bgithub_pat_[A-Za-z0-9_]{60,255}\b",
    ),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_\-]{20,}\b"),
    ("slack_token", r"\bxox[baprs]-[A-Za-z0-9-]{10,}\b"),
    (
        "slack_webhook",
        r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+",
    ),
    ("anthropic_api_key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}\b"),
    ("openai_api_key", r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{32,}\b"),
    ("stripe_live_key", r"\b[sr]k_live_[A-Za-z0-9]{20,}\b"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b"),
];

fn rules() -> &'static [(&'static str, Regex)] {
    static R: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    R.get_or_init(|| {
        RULES
            .iter()
            .filter_map(|(name, p)| Regex::new(p).ok().map(|r| (*name, r)))
            .collect()
    })
}

fn assignment() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(
            r#"(?i)(secret|token|passw(or)?d|api[_-]?key|private[_-]?key|credential|auth)[A-Za-z0-9_.-]*["']?\s*[:=]\s*["']?([A-Za-z0-9+/=_\-.]{20,})"#,
        )
        .ok()
    })
    .as_ref()
}

/// Whether a path is a configuration file, where high-entropy values are suspicious.
fn is_config(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name.starts_with(".env")
        || name.ends_with(".npmrc")
        || name.ends_with(".netrc")
        || [
            ".yml",
            ".yaml",
            ".json",
            ".toml",
            ".ini",
            ".cfg",
            ".conf",
            ".properties",
            ".env",
        ]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Shannon entropy in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// A value that looks generated rather than written: long, mixed letters and digits,
/// high entropy, and not a path or URL.
fn looks_random(v: &str) -> bool {
    v.len() >= 20
        && !v.starts_with(['/', '.', '~'])
        && !v.contains("://")
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes().any(|b| b.is_ascii_alphabetic())
        && entropy(v) >= 3.5
}

/// Scan one added line of `file` (line number `line`).
pub fn scan_line(file: &str, line: u32, text: &str) -> Vec<SecretFinding> {
    let mut out: Vec<SecretFinding> = rules()
        .iter()
        .filter(|(_, r)| r.is_match(text))
        .map(|(name, _)| SecretFinding {
            file: file.to_owned(),
            line,
            rule: (*name).to_owned(),
        })
        .collect();
    if out.is_empty()
        && is_config(file)
        && let Some(re) = assignment()
        && re
            .captures_iter(text)
            .any(|c| c.get(3).is_some_and(|v| looks_random(v.as_str())))
    {
        out.push(SecretFinding {
            file: file.to_owned(),
            line,
            rule: "high_entropy".to_owned(),
        });
    }
    out
}

/// Scan a unified diff (`git diff -U0` output): only added lines count, numbered in the
/// new file.
pub fn scan_diff(diff: &str) -> Vec<SecretFinding> {
    let mut out = Vec::new();
    let mut file: Option<String> = None;
    let mut line: u32 = 0;
    for l in diff.lines() {
        if let Some(path) = l.strip_prefix("+++ ") {
            file = path.strip_prefix("b/").map(str::to_owned);
            continue;
        }
        if l.starts_with("--- ") {
            continue;
        }
        if let Some(h) = l.strip_prefix("@@ ") {
            // @@ -a,b +c,d @@
            line = h
                .split_whitespace()
                .find_map(|p| p.strip_prefix('+'))
                .and_then(|p| p.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            continue;
        }
        let Some(f) = &file else { continue };
        if let Some(added) = l.strip_prefix('+') {
            out.extend(scan_line(f, line, added));
            line += 1;
        } else if l.starts_with(' ') {
            line += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_formats_are_found_with_file_and_line_and_never_the_value() {
        let token = format!("ghp_{}", "a1B2c3D4e5".repeat(4));
        let diff = format!(
            "diff --git a/src/x.rs b/src/x.rs\n--- a/src/x.rs\n+++ b/src/x.rs\n@@ -0,0 +1,3 @@\n+fn main() {{}}\n+let t = \"{token}\";\n+// fine\n"
        );
        let f = scan_diff(&diff);
        assert_eq!(
            f,
            vec![SecretFinding {
                file: "src/x.rs".into(),
                line: 2,
                rule: "github_token".into()
            }]
        );
        assert!(!serde_json::to_string(&f).unwrap().contains(&token));
    }

    #[test]
    fn private_keys_aws_keys_and_config_entropy() {
        let diff = "+++ b/deploy/key.pem\n@@ -0,0 +5,2 @@\n+-----BEGIN OPENSSH PRIVATE KEY-----\n+b3BlbnNzaC1rZXktdjEAAAAA\n+++ b/config/app.yml\n@@ -3,0 +4 @@\n+api_key: Zk9mQ2x7Pq1Rr8Ss0Tt4Uu6Vv\n+++ b/src/aws.rs\n@@ -1 +1 @@\n+const K: &str = \"AKIAIOSFODNN7EXAMPLE\";\n";
        let rules: Vec<(String, u32, String)> = scan_diff(diff)
            .into_iter()
            .map(|f| (f.file, f.line, f.rule))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("deploy/key.pem".into(), 5, "private_key".into()),
                ("config/app.yml".into(), 4, "high_entropy".into()),
                ("src/aws.rs".into(), 1, "aws_access_key_id".into()),
            ]
        );
    }

    #[test]
    fn ordinary_code_and_low_entropy_config_pass() {
        let diff = "+++ b/config/app.yml\n@@ -0,0 +1,2 @@\n+password_file: /etc/app/password.txt\n+token_ttl: 3600\n+++ b/src/lib.rs\n@@ -0,0 +1 @@\n+let api_key = std::env::var(\"API_KEY\")?;\n";
        assert_eq!(scan_diff(diff), vec![]);
    }
}
