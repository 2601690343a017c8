//! The decision for one event and one trigger, without side effects: which event filter,
//! repository filter, command check or condition stopped it (with the value seen), or
//! the session to dispatch — workflow, rendered goal, mapped context, source identity.
//! Dedupe, queue limits and retries need the store and are decided by the runtime.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use worktrain_core::run::SourceRef;

use crate::config::{Commands, ContextValue, Source, Trigger};
use crate::inbound::{Comment, Inbound, Provider};

/// Every kind of recorded trigger decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// A webhook delivery was authenticated and persisted (answered `202`).
    Received,
    /// GitHub's `ping` was answered.
    Ping,
    /// A session was dispatched.
    Dispatched,
    /// The event did not qualify: event filter, repository filter or condition (the
    /// failed condition and the value seen are in the detail).
    Filtered,
    /// Already handled: the same delivery id, or a session for the same source item is
    /// still unfinished.
    Duplicate,
    /// The signature or token did not match, or was missing or stale.
    SignatureRejected,
    /// A comment command from an author who may not command.
    UnauthorizedCommenter,
    /// The trigger's queue was full.
    QueueFull,
    /// The trigger is disabled.
    TriggerDisabled,
    /// The body was not usable: not JSON, a goal template or context query matched nothing.
    InvalidPayload,
    /// The dispatch itself failed (unknown workflow, store failure).
    DispatchFailed,
    /// A running session's source stopped qualifying; it was cancelled or kept.
    Reconciled,
    /// A failed session's source will be dispatched again after a backoff.
    RetryScheduled,
    /// The retry budget of a source item is used up.
    RetryExhausted,
    /// A scheduled firing was missed (the daemon was down or late).
    ScheduleMissed,
    /// A scheduled firing was skipped because the previous session is unfinished.
    OverlapSkipped,
    /// A poll's first run remembered the existing items without dispatching them.
    PollBaseline,
    /// A poll failed (rate limit, network, auth); the next one retries.
    PollFailed,
}

impl DecisionKind {
    /// The name of this value on the wire (events, API, config files) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Received => "received",
            DecisionKind::Ping => "ping",
            DecisionKind::Dispatched => "dispatched",
            DecisionKind::Filtered => "filtered",
            DecisionKind::Duplicate => "duplicate",
            DecisionKind::SignatureRejected => "signature_rejected",
            DecisionKind::UnauthorizedCommenter => "unauthorized_commenter",
            DecisionKind::QueueFull => "queue_full",
            DecisionKind::TriggerDisabled => "trigger_disabled",
            DecisionKind::InvalidPayload => "invalid_payload",
            DecisionKind::DispatchFailed => "dispatch_failed",
            DecisionKind::Reconciled => "reconciled",
            DecisionKind::RetryScheduled => "retry_scheduled",
            DecisionKind::RetryExhausted => "retry_exhausted",
            DecisionKind::ScheduleMissed => "schedule_missed",
            DecisionKind::OverlapSkipped => "overlap_skipped",
            DecisionKind::PollBaseline => "poll_baseline",
            DecisionKind::PollFailed => "poll_failed",
        }
    }
}

/// A session to dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The workflow to run (id or path), from the trigger.
    pub workflow: String,
    /// The session goal, rendered from the event with the trigger's goal template.
    pub goal: String,
    /// The start context, mapped from the event by the trigger's `context`.
    pub context: Map<String, Value>,
    /// The source item.
    pub source: Option<SourceRef>,
    /// `event.action`.
    pub event: String,
}

/// What to do with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Dispatch this session.
    Dispatch(Plan),
    /// A `retry` command for the source item.
    Retry {
        /// The issue/PR/MR the command was written on.
        source: SourceRef,
        /// Login/username of the commenter (already checked to be allowed to ask).
        author: String,
    },
    /// Answer a ping.
    Ping,
    /// Record and stop.
    Stop {
        /// The decision to record (`filtered`, `trigger_disabled`, …).
        kind: DecisionKind,
        /// Why, in words for the operator (shown in the trigger's log).
        reason: String,
        /// Structured detail (failed condition, value seen, …).
        detail: Value,
    },
}

fn stop(kind: DecisionKind, reason: impl Into<String>, detail: Value) -> Verdict {
    Verdict::Stop {
        kind,
        reason: reason.into(),
        detail,
    }
}

/// A parsed comment command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `run <workflow>`.
    Run(String),
    /// `retry`.
    Retry,
    /// Anything else after a prefix.
    Unknown(String),
}

/// The first command in `body` (a line starting with one of `prefixes`).
pub fn parse_command(body: &str, prefixes: &[String]) -> Option<Command> {
    for line in body.lines() {
        let line = line.trim();
        for p in prefixes {
            let Some(head) = line.get(..p.len()) else {
                continue;
            };
            if !head.eq_ignore_ascii_case(p) {
                continue;
            }
            let rest = &line[p.len()..];
            if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
                continue;
            }
            let mut words = rest.split_whitespace();
            return Some(match (words.next(), words.next()) {
                (Some("run"), Some(wf)) => Command::Run(wf.to_owned()),
                (Some("retry"), None) => Command::Retry,
                (Some(other), _) => Command::Unknown(other.to_owned()),
                (None, _) => Command::Unknown(String::new()),
            });
        }
    }
    None
}

/// Whether the commenter may command. `gitlab_access` is the commenter's project access
/// level, looked up by the caller for GitLab notes.
fn authorised(
    cmds: &Commands,
    provider: Provider,
    c: &Comment,
    gitlab_access: Option<u32>,
) -> Result<(), (String, Value)> {
    match provider {
        Provider::Gitlab => match gitlab_access {
            Some(level) if level >= cmds.min_access_level => Ok(()),
            Some(level) => Err((
                format!(
                    "{} has access level {level}; commands need at least {}",
                    c.author, cmds.min_access_level
                ),
                json!({"author": c.author, "access_level": level, "min_access_level": cmds.min_access_level}),
            )),
            None => Err((
                format!("the access level of {} could not be determined", c.author),
                json!({"author": c.author, "access_level": null}),
            )),
        },
        Provider::Github | Provider::Webhook | Provider::Poll | Provider::Schedule => {
            let assoc = c.association.as_deref().unwrap_or("NONE");
            if cmds.allow.iter().any(|a| a.eq_ignore_ascii_case(assoc)) {
                Ok(())
            } else {
                Err((
                    format!(
                        "{} is {assoc}; commands are honoured from {}",
                        c.author,
                        cmds.allow.join(", ")
                    ),
                    json!({"author": c.author, "author_association": assoc, "allowed": cmds.allow}),
                ))
            }
        }
    }
}

/// Decide about `ev` for `trigger`.
pub fn evaluate(trigger: &Trigger, ev: &Inbound, gitlab_access: Option<u32>) -> Verdict {
    let key = ev.key();
    if !trigger.enabled {
        return stop(
            DecisionKind::TriggerDisabled,
            format!("trigger `{}` is disabled (enabled: false)", trigger.id),
            json!({"event": key}),
        );
    }
    if ev.ping {
        return Verdict::Ping;
    }
    let (events, repos, commands) = match &trigger.source {
        Source::GithubWebhook(g) => (
            g.events.as_slice(),
            g.repositories.as_slice(),
            g.commands.as_ref(),
        ),
        Source::GitlabWebhook(g) => (
            g.events.as_slice(),
            g.projects.as_slice(),
            g.commands.as_ref(),
        ),
        Source::Webhook(_)
        | Source::GithubPoll(_)
        | Source::GitlabPoll(_)
        | Source::Schedule(_) => (&[][..], &[][..], None),
    };
    if !repos.is_empty() {
        let repo = ev.repository.as_deref().unwrap_or("");
        if !repos.iter().any(|r| r.eq_ignore_ascii_case(repo)) {
            return stop(
                DecisionKind::Filtered,
                format!("repository `{repo}` is not among {}", repos.join(", ")),
                json!({"filter": "repository", "seen": repo, "allowed": repos}),
            );
        }
    }
    let mut workflow = trigger.workflow.clone();
    let command = commands.and_then(|cmds| {
        ev.comment
            .as_ref()
            .and_then(|c| parse_command(&c.body, &cmds.prefixes).map(|cmd| (cmds, c, cmd)))
    });
    match command {
        Some((cmds, comment, cmd)) => {
            if let Err((reason, detail)) = authorised(cmds, ev.provider, comment, gitlab_access) {
                return stop(DecisionKind::UnauthorizedCommenter, reason, detail);
            }
            match cmd {
                Command::Retry => {
                    let Some(source) = ev.source.clone() else {
                        return stop(
                            DecisionKind::Filtered,
                            "`retry` on an event without a source item",
                            json!({}),
                        );
                    };
                    return Verdict::Retry {
                        source,
                        author: comment.author.clone(),
                    };
                }
                Command::Run(wf) => {
                    if wf != trigger.workflow && !cmds.workflows.contains(&wf) {
                        return stop(
                            DecisionKind::Filtered,
                            format!(
                                "`run {wf}`: workflow `{wf}` is not allowed for commands on this trigger"
                            ),
                            json!({"command": "run", "workflow": wf, "allowed": cmds.workflows}),
                        );
                    }
                    workflow = wf;
                }
                Command::Unknown(verb) => {
                    return stop(
                        DecisionKind::Filtered,
                        format!("unknown command `{verb}` (known: run <workflow>, retry)"),
                        json!({"command": verb}),
                    );
                }
            }
        }
        None => {
            let subscribed = match &trigger.source {
                Source::Webhook(_)
                | Source::GithubPoll(_)
                | Source::GitlabPoll(_)
                | Source::Schedule(_) => true,
                Source::GithubWebhook(_) | Source::GitlabWebhook(_) => events
                    .iter()
                    .any(|p| p.matches(&ev.event, ev.action.as_deref())),
            };
            if !subscribed {
                let listed: Vec<String> = events.iter().map(ToString::to_string).collect();
                return stop(
                    DecisionKind::Filtered,
                    format!(
                        "event `{key}` is not among the trigger's events ({})",
                        if listed.is_empty() {
                            "none".to_owned()
                        } else {
                            listed.join(", ")
                        }
                    ),
                    json!({"filter": "event", "seen": key, "events": listed}),
                );
            }
        }
    }
    if let Some(cond) = &trigger.when
        && let Err(failed) = cond.eval(&ev.payload)
    {
        return stop(
            DecisionKind::Filtered,
            failed.to_string(),
            json!({"filter": "condition", "condition": failed.condition, "seen": failed.seen, "missing": failed.missing}),
        );
    }
    match plan(trigger, ev, workflow) {
        Ok(p) => Verdict::Dispatch(p),
        Err(v) => v,
    }
}

/// Render the goal and the context for `ev`.
pub fn plan(trigger: &Trigger, ev: &Inbound, workflow: String) -> Result<Plan, Verdict> {
    let goal = trigger.goal.render(&ev.payload).map_err(|e| {
        stop(
            DecisionKind::InvalidPayload,
            format!("goal: {e}"),
            json!({"field": "goal", "template": trigger.goal.as_str()}),
        )
    })?;
    let mut context = Map::new();
    for (k, v) in &trigger.context {
        let value = match v {
            ContextValue::Literal(v) => Ok(v.clone()),
            ContextValue::Path(p) => p.extract(&ev.payload),
            ContextValue::Template(t) => t.render(&ev.payload).map(Value::String),
        }
        .map_err(|e| {
            stop(
                DecisionKind::InvalidPayload,
                format!("context.{k}: {e}"),
                json!({"field": format!("context.{k}")}),
            )
        })?;
        context.insert(k.clone(), value);
    }
    Ok(Plan {
        workflow,
        goal,
        context,
        source: ev.source.clone(),
        event: ev.key(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let p = vec!["/worktrain".to_string(), "@bot".to_string()];
        assert_eq!(
            parse_command("hi\n/worktrain run coding-task\n", &p),
            Some(Command::Run("coding-task".into()))
        );
        assert_eq!(parse_command("@Bot retry", &p), Some(Command::Retry));
        assert_eq!(parse_command("/worktrainer run x", &p), None);
        assert_eq!(parse_command("please /worktrain run x", &p), None);
        assert_eq!(
            parse_command("/worktrain dance", &p),
            Some(Command::Unknown("dance".into()))
        );
    }
}
