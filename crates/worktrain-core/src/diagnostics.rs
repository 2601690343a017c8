//! Turning a deserializer's complaint into a message a person can act on: the exact
//! line of an unknown key (serde loses positions inside tagged enums and flattened maps,
//! and reports the start of the enclosing map instead), and a "did you mean" for a
//! mistyped key. Pure text functions, shared by every YAML file worktrain reads.

/// The closest of `candidates` to `unknown`, when it is close enough to be a likely typo
/// (Jaro–Winkler similarity of at least 0.8).
///
/// ```
/// use worktrain_core::diagnostics::did_you_mean;
/// assert_eq!(did_you_mean("promt", &["program", "prompt", "args"]), Some("prompt"));
/// assert_eq!(did_you_mean("zzz", &["program", "prompt"]), None);
/// ```
pub fn did_you_mean<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The names serde lists in "expected one of `a`, `b`" (or "expected `a` or `b`").
pub fn expected_names(message: &str) -> Vec<&str> {
    let Some(at) = message.find("expected") else {
        return Vec::new();
    };
    message[at..].split('`').skip(1).step_by(2).collect()
}

/// The key serde calls unknown in `message` ("unknown field `x`" / "unknown variant `x`").
pub fn unknown_name(message: &str) -> Option<&str> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    rest.split_once('`').map(|(name, _)| name)
}

/// A refined position and message for an error at `line`:`column` (1-based) of `text`:
/// an unknown key is looked up from the reported position down, so the error points at
/// the key itself, and a close known key is suggested.
pub fn refine(text: &str, line: usize, column: usize, message: &str) -> (usize, usize, String) {
    let Some(name) = unknown_name(message) else {
        return (line, column, message.to_owned());
    };
    let mut message = message.to_owned();
    if let Some(better) = did_you_mean(name, &expected_names(&message)) {
        message.push_str(&format!(" — did you mean `{better}`?"));
    }
    let (mut at_line, mut at_column) = (line, column);
    if message.contains("unknown field") && line > 0 {
        for (i, l) in text.lines().enumerate().skip(line - 1) {
            let trimmed = l.trim_start().trim_start_matches("- ");
            let key = trimmed
                .split_once(':')
                .map(|(k, _)| k.trim().trim_matches(|c| c == '"' || c == '\''));
            if key == Some(name) {
                at_line = i + 1;
                at_column = l.len() - l.trim_start().len() + 1;
                break;
            }
        }
    }
    (at_line, at_column, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_pinned_to_its_own_line() {
        let text =
            "agents:\n  default:\n    kind: command\n    program: claude\n    promt: stdin\n";
        let (l, c, m) = refine(
            text,
            2,
            3,
            "unknown field `promt`, expected one of `program`, `args`, `prompt`",
        );
        assert_eq!((l, c), (5, 5));
        assert!(m.ends_with("did you mean `prompt`?"), "{m}");
    }

    #[test]
    fn other_errors_are_left_alone() {
        assert_eq!(
            refine("a: 1\n", 1, 4, "invalid type: integer"),
            (1, 4, "invalid type: integer".to_owned())
        );
    }
}
