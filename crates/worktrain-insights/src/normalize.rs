//! Normalisation shared by importers and detectors: digests, fingerprint text with session
//! specifics stripped, error signatures, shell command classification and test output.
//!
//! Everything here works on bounded slices of its input (outputs are scanned at their
//! head and tail only), so importing stays linear and fast however large a tool result is.

use std::sync::LazyLock;

use regex::Regex;

use crate::model::{Action, EditInfo, MAX_COMMAND_CHARS, MAX_FAILING_TESTS, MAX_PATHS, TestRun};

/// Bytes scanned at the head of a tool result.
pub const SCAN_HEAD: usize = 4 * 1024;
/// Bytes scanned at the tail of a tool result.
pub const SCAN_TAIL: usize = 12 * 1024;

pub use worktrain_core::activity::{digest, text_digest};

/// At most `max` characters of `s`, with `…` when cut.
pub fn bounded(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The slice at a char boundary at or before `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The head and tail of a long text (the whole text when short).
pub fn head_tail(s: &str) -> (&str, &str) {
    if s.len() <= SCAN_HEAD + SCAN_TAIL {
        return (s, "");
    }
    let h = floor_boundary(s, SCAN_HEAD);
    let mut t = s.len() - SCAN_TAIL;
    while t < s.len() && !s.is_char_boundary(t) {
        t += 1;
    }
    (&s[..h], &s[t..])
}

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new($pat).ok());
    };
}

re!(
    RE_UUID,
    r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
);
re!(
    RE_HEX,
    r"(?i)\b(?:0x)?[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b|\b(?:0x)?[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*\b"
);
re!(RE_ID, r"\b[a-z]{2,5}_[0-9a-z]{10,}\b");
re!(
    RE_PATH,
    r#"(?:[A-Za-z]:)?(?:~|\.{1,2})?(?:/[^\s'"`:,;()\[\]{}<>/]*[A-Za-z_][^\s'"`:,;()\[\]{}<>/]*)+/?|\b[\w.-]*[A-Za-z_][\w.-]*/[\w./-]+"#
);
re!(RE_NUM, r"\b\d+(?:\.\d+)*\b");
re!(RE_WS, r"\s+");

fn replace(re: &LazyLock<Option<Regex>>, s: &str, with: &str) -> String {
    match re.as_ref() {
        Some(r) => r.replace_all(s, with).into_owned(),
        None => s.to_owned(),
    }
}

/// Text with session specifics stripped, for fingerprints: UUIDs and ids become `<id>`,
/// hex digests `<hex>`, paths `<path>`, numbers `<n>`; whitespace collapses; at most 160
/// characters.
pub fn normalize(s: &str) -> String {
    let s = bounded(s, 600);
    let s = replace(&RE_UUID, &s, "<id>");
    let s = replace(&RE_ID, &s, "<id>");
    let s = replace(&RE_PATH, &s, "<path>");
    let s = hex_words(&s);
    let s = replace(&RE_NUM, &s, "<n>");
    let s = replace(&RE_WS, &s, " ");
    bounded(&s, 160)
}

/// Hex-looking words of 7+ characters (commit ids, digests) become `<hex>`.
fn hex_words(s: &str) -> String {
    match RE_HEX.as_ref() {
        Some(r) => r
            .replace_all(s, |c: &regex::Captures<'_>| {
                let m = c.get(0).map_or("", |m| m.as_str());
                if m.len() >= 7 {
                    "<hex>".to_owned()
                } else {
                    m.to_owned()
                }
            })
            .into_owned(),
        None => s.to_owned(),
    }
}

/// What went wrong in a failed command's output: the most informative line (a Python
/// exception, a compiler error, `command not found`, …), unnormalised, bounded.
pub fn error_line(output: &str) -> Option<String> {
    let (head, tail) = head_tail(output);
    let lines = || head.lines().chain(tail.lines());
    // Specific shapes first, last occurrence wins (a traceback ends with the exception).
    let mut best: Option<&str> = None;
    for l in lines() {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        if is_exception_line(t)
            || t.contains("command not found")
            || t.ends_with(": not found")
            || t.starts_with("error[")
            || t.starts_with("error:")
            || t.contains("Permission denied")
            || t.contains("No space left on device")
            || t.contains("Could not resolve host")
        {
            best = Some(t);
        }
    }
    if let Some(b) = best {
        return Some(bounded(b, 200));
    }
    let mut generic: Option<&str> = None;
    for l in lines() {
        let t = l.trim();
        let lower = t.to_ascii_lowercase();
        if lower.contains("error") || lower.contains("failed") || lower.contains("fatal") {
            generic = Some(t);
        }
    }
    if let Some(g) = generic {
        return Some(bounded(g, 200));
    }
    lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| bounded(l, 200))
}

/// `SomeError: message` / `pkg.SomeException: message` at the start of a line.
fn is_exception_line(t: &str) -> bool {
    let Some((name, _)) = t.split_once(':') else {
        return false;
    };
    let last = name.rsplit('.').next().unwrap_or(name);
    !name.contains(' ')
        && last.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && (last.ends_with("Error") || last.ends_with("Exception") || last == "SyntaxError")
}

/// Environment problems (as opposed to problems in the code being written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvProblem {
    /// A program is not installed or not on `PATH`.
    CommandNotFound(String),
    /// A module or package is not installed.
    MissingModule(String),
    /// The operating system refused access.
    PermissionDenied,
    /// The network is unreachable or a host does not resolve.
    Network,
    /// The disk is full.
    DiskFull,
}

impl EnvProblem {
    /// A short stable label (used in fingerprints).
    pub fn label(&self) -> String {
        match self {
            EnvProblem::CommandNotFound(c) => format!("command not found: {c}"),
            EnvProblem::MissingModule(m) => format!("missing module: {m}"),
            EnvProblem::PermissionDenied => "permission denied".to_owned(),
            EnvProblem::Network => "network unreachable".to_owned(),
            EnvProblem::DiskFull => "disk full".to_owned(),
        }
    }
}

re!(
    RE_CMD_NOT_FOUND,
    r"(?:^|[\s:])([A-Za-z0-9_.+-]+): (?:command not found|not found)$"
);
re!(
    RE_MODULE,
    r#"(?:No module named|Cannot find module|cannot find package|could not find module) ['"]?([A-Za-z0-9_.@/-]+)"#
);

/// Classify an error line as an environment problem.
pub fn env_problem(line: &str) -> Option<EnvProblem> {
    let t = line.trim();
    if let Some(c) = RE_CMD_NOT_FOUND.as_ref().and_then(|r| r.captures(t)) {
        let cmd = c.get(1).map_or("", |m| m.as_str());
        // `sh: 1: foo: not found` puts the line number first; the program is the last word.
        return Some(EnvProblem::CommandNotFound(cmd.to_owned()));
    }
    if let Some(c) = RE_MODULE.as_ref().and_then(|r| r.captures(t)) {
        let m = c.get(1).map_or("", |m| m.as_str());
        let root = m.split('.').next().unwrap_or(m);
        return Some(EnvProblem::MissingModule(root.to_owned()));
    }
    if t.contains("Permission denied")
        || t.contains("Operation not permitted")
        || t.contains("EACCES")
    {
        return Some(EnvProblem::PermissionDenied);
    }
    if t.contains("Could not resolve host")
        || t.contains("Temporary failure in name resolution")
        || t.contains("Network is unreachable")
    {
        return Some(EnvProblem::Network);
    }
    if t.contains("No space left on device") {
        return Some(EnvProblem::DiskFull);
    }
    None
}

/// A shell command, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellInfo {
    /// The main action (edit > test > run > search > read > list).
    pub action: Action,
    /// Whether any part runs tests.
    pub runs_tests: bool,
    /// Whether any part searches.
    pub searches: bool,
    /// Files read or changed (bounded).
    pub paths: Vec<String>,
    /// The change, when it can be told (a `sed -i` substitution, a heredoc written to a file).
    pub edit: Option<EditInfo>,
}

const TEST_WORDS: &[&str] = &[
    "pytest",
    "py.test",
    "tox",
    "nox",
    "jest",
    "vitest",
    "mocha",
    "rspec",
    "phpunit",
    "ctest",
    "nosetests",
    "runtests.py",
];

/// Split a command line into simple commands (on `&&`, `||`, `;`, `|` and newlines outside
/// quotes; a heredoc body stays with its command).
fn segments(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = cmd.chars().peekable();
    let mut heredoc: Option<String> = None;
    let mut line = String::new();
    while let Some(c) = chars.next() {
        if let Some(tag) = &heredoc {
            // Inside a heredoc body: consume until a line equal to the tag.
            cur.push(c);
            if c == '\n' {
                if line.trim() == tag {
                    heredoc = None;
                    out.push(std::mem::take(&mut cur));
                }
                line.clear();
            } else {
                line.push(c);
            }
            continue;
        }
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '<') if chars.peek() == Some(&'<') => {
                cur.push('<');
                cur.push('<');
                chars.next();
                let mut tag = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    tag.push(n);
                    cur.push(n);
                    chars.next();
                }
                let t: String = tag
                    .trim_start_matches('-')
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches(|c| c == '\'' || c == '"')
                    .to_owned();
                if !t.is_empty() {
                    heredoc = Some(t);
                    line.clear();
                }
            }
            (None, '&') if chars.peek() == Some(&'&') => {
                chars.next();
                out.push(std::mem::take(&mut cur));
            }
            (None, '|') => {
                if chars.peek() == Some(&'|') {
                    chars.next();
                }
                out.push(std::mem::take(&mut cur));
            }
            (None, ';' | '\n') => out.push(std::mem::take(&mut cur)),
            (None, c) => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Words of a simple command, with quotes removed (no expansion).
fn words(seg: &str) -> Vec<String> {
    let first_line = seg.lines().next().unwrap_or("");
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut has = false;
    for c in first_line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                has = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn looks_like_path(w: &str) -> bool {
    !w.starts_with('-')
        && !w.contains('=')
        && !w.contains('*')
        && (w.contains('/')
            || w.rsplit_once('.')
                .is_some_and(|(a, b)| !a.is_empty() && (1..=5).contains(&b.len())))
        && w.len() < 200
}

/// The program of a simple command, skipping `cd x`, env assignments, `sudo`, `timeout N`,
/// `env`, `time`, `python -m`.
fn program(ws: &[String]) -> (String, usize) {
    let mut i = 0;
    while i < ws.len() {
        let w = ws[i].as_str();
        if w.contains('=') && !w.starts_with('-') && !w.starts_with('/') {
            i += 1;
            continue;
        }
        match w {
            "sudo" | "env" | "time" | "nohup" | "exec" | "command" => i += 1,
            "timeout" => i += 2,
            _ => break,
        }
    }
    let Some(p) = ws.get(i) else {
        return (String::new(), i);
    };
    let base = p.rsplit('/').next().unwrap_or(p).to_owned();
    if (base.starts_with("python") || base == "uv" || base == "poetry")
        && ws.get(i + 1).is_some_and(|w| w == "-m" || w == "run")
        && let Some(m) = ws.get(i + 2)
    {
        return (m.clone(), i + 2);
    }
    (base, i)
}

fn is_test(prog: &str, ws: &[String], at: usize) -> bool {
    let next = ws.get(at + 1).map(String::as_str).unwrap_or("");
    if TEST_WORDS.contains(&prog) {
        return true;
    }
    if prog.starts_with("python") {
        return ws
            .iter()
            .skip(at + 1)
            .any(|w| w.ends_with("runtests.py") || w.starts_with("test_") || w.contains("/test_"));
    }
    match prog {
        "unittest" => true,
        "cargo" => matches!(next, "test" | "nextest"),
        "go" | "npm" | "yarn" | "pnpm" | "mvn" | "gradle" | "gradlew" | "dotnet" | "make" => {
            matches!(next, "test" | "check" | "tests")
                || (next == "run" && ws.get(at + 2).is_some_and(|w| w.starts_with("test")))
        }
        "test" => ws.get(at).is_some_and(|w| w.contains('/')),
        "bundle" => ws.iter().any(|w| w == "rspec"),
        _ => false,
    }
}

/// The target of an output redirect (`> file`, `>> file`, `>file`), not `2>&1` or
/// `/dev/null`.
fn redirect_target(ws: &[String]) -> Option<String> {
    let mut it = ws.iter().peekable();
    while let Some(w) = it.next() {
        let target = if w == ">" || w == ">>" || w == "1>" {
            it.peek().map(|s| s.to_string())
        } else if let Some(rest) = w.strip_prefix(">>").or_else(|| w.strip_prefix('>')) {
            (!rest.is_empty() && !rest.starts_with('&')).then(|| rest.to_owned())
        } else {
            None
        };
        if let Some(t) = target
            && t != "/dev/null"
            && !t.starts_with('&')
        {
            return Some(t);
        }
    }
    None
}

/// The body of a heredoc in a segment (the lines after the first, minus the end tag).
fn heredoc_body(seg: &str) -> Option<&str> {
    if !seg.contains("<<") {
        return None;
    }
    let (_, rest) = seg.split_once('\n')?;
    let body = rest.trim_end();
    let body = match body.rfind('\n') {
        Some(i) => &body[..i],
        None => "",
    };
    Some(body)
}

/// `s<d>old<d>new<d>flags` of a sed script.
fn sed_substitution(script: &str) -> Option<(String, String)> {
    let mut chars = script.chars();
    if chars.next()? != 's' {
        return None;
    }
    let d = chars.next()?;
    if d.is_alphanumeric() || d.is_whitespace() {
        return None;
    }
    let rest: String = chars.collect();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in rest.chars() {
        if esc {
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            cur.push(c);
            esc = true;
        } else if c == d {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if parts.len() < 2 {
        return None;
    }
    Some((parts[0].clone(), parts[1].clone()))
}

/// Classify a shell command line.
pub fn classify_shell(cmd: &str) -> ShellInfo {
    let mut info = ShellInfo {
        action: Action::Run,
        runs_tests: false,
        searches: false,
        paths: Vec::new(),
        edit: None,
    };
    let mut edits = false;
    let mut reads = false;
    let mut lists = false;
    let mut runs = false;
    for seg in segments(cmd) {
        let ws = words(&seg);
        let (prog, at) = program(&ws);
        let args: Vec<&String> = ws.iter().skip(at + 1).collect();
        let push_paths = |info: &mut ShellInfo, it: &mut dyn Iterator<Item = &String>| {
            for w in it {
                if looks_like_path(w) && info.paths.len() < MAX_PATHS && !info.paths.contains(w) {
                    info.paths.push(w.clone());
                }
            }
        };
        if let Some(target) = redirect_target(&ws) {
            edits = true;
            if info.paths.len() < MAX_PATHS && !info.paths.contains(&target) {
                info.paths.push(target.clone());
            }
            if info.edit.is_none() {
                info.edit = Some(EditInfo {
                    path: target,
                    before: None,
                    after: heredoc_body(&seg).map(text_digest),
                });
            }
            continue;
        }
        match prog.as_str() {
            "" | "cd" | "echo" | "printf" | "true" | "export" | "source" | "." | "set" => {}
            "sed" | "perl"
                if args
                    .iter()
                    .any(|a| a.starts_with("-i") || a.starts_with("-pi")) =>
            {
                edits = true;
                let script = args
                    .iter()
                    .find(|a| !a.starts_with('-'))
                    .map(|s| s.as_str())
                    .unwrap_or("");
                let files: Vec<&String> = args
                    .iter()
                    .filter(|a| !a.starts_with('-') && a.as_str() != script)
                    .copied()
                    .collect();
                push_paths(&mut info, &mut files.iter().copied());
                if info.edit.is_none()
                    && let (Some((old, new)), Some(f)) = (sed_substitution(script), files.last())
                {
                    info.edit = Some(EditInfo {
                        path: (*f).clone(),
                        before: Some(text_digest(&old)),
                        after: Some(text_digest(&new)),
                    });
                }
            }
            "tee" | "patch" | "rm" | "mv" | "cp" | "touch" | "truncate" => {
                edits = true;
                push_paths(&mut info, &mut args.iter().copied());
                if info.edit.is_none()
                    && let Some(p) = info.paths.last()
                {
                    info.edit = Some(EditInfo {
                        path: p.clone(),
                        before: None,
                        after: None,
                    });
                }
            }
            "git" => match args.first().map(|s| s.as_str()) {
                Some("apply" | "checkout" | "restore" | "stash" | "reset" | "am") => {
                    edits = true;
                    push_paths(&mut info, &mut args.iter().skip(1).copied());
                }
                Some("grep") => info.searches = true,
                Some("diff" | "status" | "log" | "show" | "blame") => reads = true,
                _ => runs = true,
            },
            "grep" | "egrep" | "fgrep" | "rg" | "ag" | "ack" | "find" | "fd" | "locate" => {
                info.searches = true;
                push_paths(&mut info, &mut args.iter().copied());
            }
            "cat" | "head" | "tail" | "less" | "more" | "nl" | "bat" | "view" | "wc" => {
                reads = true;
                push_paths(&mut info, &mut args.iter().copied());
            }
            "sed" | "awk" => {
                reads = true;
                push_paths(&mut info, &mut args.iter().skip(1).copied());
            }
            "ls" | "tree" | "pwd" => lists = true,
            p if is_test(p, &ws, at) => {
                info.runs_tests = true;
                push_paths(&mut info, &mut args.iter().copied());
            }
            _ => {
                runs = true;
                push_paths(&mut info, &mut args.iter().copied());
            }
        }
    }
    info.action = if edits {
        Action::Edit
    } else if info.runs_tests {
        Action::Test
    } else if runs {
        Action::Run
    } else if info.searches {
        Action::Search
    } else if reads {
        Action::Read
    } else if lists {
        Action::List
    } else {
        Action::Run
    };
    info
}

/// A command line kept for display and fingerprints: bounded, one line.
pub fn command_text(cmd: &str) -> String {
    bounded(&cmd.replace('\n', "\\n"), MAX_COMMAND_CHARS)
}

/// A command with its arguments normalised: the program and subcommand kept, paths,
/// numbers and ids replaced (for fingerprints).
pub fn command_shape(cmd: &str) -> String {
    let first = segments(cmd)
        .into_iter()
        .map(|s| {
            let ws = words(&s);
            let (p, at) = program(&ws);
            let sub = ws
                .get(at + 1)
                .filter(|w| !w.starts_with('-') && !looks_like_path(w))
                .map(|w| format!(" {w}"))
                .unwrap_or_default();
            format!("{p}{sub}")
        })
        .filter(|s| !s.is_empty() && s != "cd")
        .collect::<Vec<_>>()
        .join(" && ");
    normalize(&first)
}

re!(RE_PYTEST_FAILED, r"^(?:FAILED|ERROR) (\S+::\S+)");
re!(RE_UNITTEST, r"^(?:FAIL|ERROR): (\w+) \(([\w.]+)\)");
re!(RE_CARGO, r"^test (\S+) \.\.\. FAILED$");
re!(RE_GO, r"^--- FAIL: (\S+)");
re!(
    RE_FAIL_SUMMARY,
    r"(?i)\b\d+ (?:failed|errors?)\b|FAILED \((?:failures|errors)=|test result: FAILED|^FAIL\b|Tests:\s+\d+ failed"
);

/// Read a test run's result from its output and exit code.
pub fn test_result(output: &str, exit_code: Option<i32>, errored: bool) -> TestRun {
    let (head, tail) = head_tail(output);
    let mut failing: Vec<String> = Vec::new();
    let mut summary_fail = false;
    for l in head.lines().chain(tail.lines()) {
        let t = l.trim_end();
        let name = if let Some(c) = RE_PYTEST_FAILED.as_ref().and_then(|r| r.captures(t)) {
            c.get(1).map(|m| m.as_str().to_owned())
        } else if let Some(c) = RE_UNITTEST.as_ref().and_then(|r| r.captures(t)) {
            Some(format!(
                "{}.{}",
                c.get(2).map_or("", |m| m.as_str()),
                c.get(1).map_or("", |m| m.as_str())
            ))
        } else if let Some(c) = RE_CARGO.as_ref().and_then(|r| r.captures(t)) {
            c.get(1).map(|m| m.as_str().to_owned())
        } else if let Some(c) = RE_GO.as_ref().and_then(|r| r.captures(t)) {
            c.get(1).map(|m| m.as_str().to_owned())
        } else {
            None
        };
        if let Some(n) = name
            && failing.len() < MAX_FAILING_TESTS
            && !failing.contains(&n)
        {
            failing.push(n);
        }
        if RE_FAIL_SUMMARY.as_ref().is_some_and(|r| r.is_match(t)) {
            summary_fail = true;
        }
    }
    failing.sort();
    let failed = match exit_code {
        Some(c) => c != 0,
        None => errored || summary_fail,
    } || !failing.is_empty();
    TestRun {
        passed: !failed,
        failing,
    }
}

/// Whether a word is specific enough that seeing it in the agent's next message means the
/// agent used the output it came from: 5+ characters with a digit, `_`, an inner capital
/// (identifiers, numbers, file names), or 9+ characters.
fn distinctive(w: &str) -> bool {
    w.len() >= 5
        && w.len() <= 64
        && (w.len() >= 9
            || w.bytes().any(|b| b.is_ascii_digit() || b == b'_')
            || w.bytes().skip(1).any(|b| b.is_ascii_uppercase()))
}

fn word_hash(w: &str) -> u64 {
    // FNV-1a: a fast, stable hash; collisions only make a use look likelier.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in w.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Hashes of the distinctive words of a text (scanned up to `cap` bytes at each end).
pub fn word_hashes(text: &str, cap: usize) -> std::collections::HashSet<u64> {
    let (head, tail) = if text.len() <= 2 * cap {
        (text, "")
    } else {
        let h = floor_boundary(text, cap);
        let mut t = text.len() - cap;
        while t < text.len() && !text.is_char_boundary(t) {
            t += 1;
        }
        (&text[..h], &text[t..])
    };
    let mut out = std::collections::HashSet::new();
    for part in [head, tail] {
        for w in part.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if distinctive(w) {
                out.insert(word_hash(w));
            }
        }
    }
    out
}

/// Whether any distinctive word of `text` is in `set`.
pub fn mentions_any(text: &str, set: &std::collections::HashSet<u64>) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| distinctive(w) && set.contains(&word_hash(w)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn normalize_strips_session_specifics() {
        let n = normalize(
            "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/tmpw6sk2trg/src/x.py' at 0x7f3a9c2e1d40 ses_01m96mbb0kx06mw4zhh17gw5jj c64cc478-3430-40fe-8e9c-4ee9986e9754",
        );
        assert_eq!(
            n,
            "FileNotFoundError: [Errno <n>] No such file or directory: '<path>' at <hex> <id> <id>"
        );
    }

    #[test]
    fn ratios_are_numbers_not_paths() {
        assert_eq!(
            normalize("Your code has been rated at 9.50/10 (previous run: 9.40/10, +0.10)"),
            "Your code has been rated at <n>/<n> (previous run: <n>/<n>, +<n>)"
        );
        assert_eq!(normalize("see src/lib.rs:12"), "see <path>:<n>");
    }

    #[test]
    fn shell_commands_are_classified() {
        let c = classify_shell("cd /testbed && sed -i 's/foo(/bar(/g' django/db/models.py");
        assert_eq!(c.action, Action::Edit);
        assert_eq!(c.paths, vec!["django/db/models.py"]);
        let e = c.edit.unwrap();
        assert_eq!(e.before.unwrap(), text_digest("foo("));
        let c = classify_shell("cd /testbed && python -m pytest tests/test_x.py -q");
        assert_eq!(c.action, Action::Test);
        assert!(c.runs_tests);
        let c = classify_shell("python tests/runtests.py auth_tests --verbosity 2");
        assert_eq!(c.action, Action::Test);
        let c = classify_shell("grep -rn \"def salted_hmac\" django/utils | head -5");
        assert_eq!(c.action, Action::Search);
        let c = classify_shell("nl -ba django/contrib/auth/base_user.py | sed -n '120,160p'");
        assert_eq!(c.action, Action::Read);
        assert_eq!(c.paths, vec!["django/contrib/auth/base_user.py"]);
        let c = classify_shell(
            "cat <<'EOF' > reproduce.py\nimport x\nprint(1)\nEOF\npython reproduce.py",
        );
        assert_eq!(c.action, Action::Edit);
        let e = c.edit.unwrap();
        assert_eq!(e.path, "reproduce.py");
        assert_eq!(e.after.unwrap(), text_digest("import x\nprint(1)"));
        let c = classify_shell("ls -la && echo done 2>&1");
        assert_eq!(c.action, Action::List);
        assert_eq!(classify_shell("cargo test -p x").action, Action::Test);
        assert_eq!(classify_shell("git diff").action, Action::Read);
    }

    #[test]
    fn errors_and_environment_problems() {
        let out = "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nModuleNotFoundError: No module named 'numpy.linalg'\n";
        let l = error_line(out).unwrap();
        assert_eq!(l, "ModuleNotFoundError: No module named 'numpy.linalg'");
        assert_eq!(
            env_problem(&l),
            Some(EnvProblem::MissingModule("numpy".into()))
        );
        assert_eq!(
            env_problem("bash: line 1: rg: command not found"),
            Some(EnvProblem::CommandNotFound("rg".into()))
        );
        assert_eq!(
            env_problem("sh: 1: black: not found"),
            Some(EnvProblem::CommandNotFound("black".into()))
        );
        assert_eq!(
            env_problem("cat: /root/x: Permission denied"),
            Some(EnvProblem::PermissionDenied)
        );
        assert_eq!(env_problem("AssertionError: 1 != 2"), None);
    }

    #[test]
    fn test_output_is_read() {
        let r = test_result(
            "===== FAILURES =====\nFAILED tests/test_a.py::test_one - assert 1 == 2\nFAILED tests/test_a.py::test_two\n==== 2 failed, 3 passed in 0.2s ====",
            Some(1),
            false,
        );
        assert!(!r.passed);
        assert_eq!(
            r.failing,
            vec!["tests/test_a.py::test_one", "tests/test_a.py::test_two"]
        );
        let r = test_result(
            "FAIL: test_fallback (auth_tests.test_tokens.TokenTests)\n----\nRan 3 tests\nFAILED (failures=1)",
            Some(1),
            false,
        );
        assert_eq!(
            r.failing,
            vec!["auth_tests.test_tokens.TokenTests.test_fallback"]
        );
        let r = test_result("Ran 10 tests in 0.1s\n\nOK", Some(0), false);
        assert!(r.passed);
        let r = test_result("test result: FAILED. 1 passed; 1 failed", None, false);
        assert!(!r.passed);
    }
}
