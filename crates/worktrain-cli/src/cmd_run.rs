//! `worktrain run`: walk a workflow in the terminal. Initialises the home on first use,
//! starts a session, prints each step, collects notes (from `$EDITOR`, stdin or
//! `--notes-from DIR`) and advances until the workflow completes.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use worktrain_core::error::ApiError;
use worktrain_core::event::SessionMode;
use worktrain_core::machine::Submission;
use worktrain_core::response::{Outcome, StepView};
use worktrain_engine::{Reply, SessionRef, StartRequest};

use crate::cli::RunArgs;
use crate::output::{Audience, Exit, print_response};
use crate::{Ctx, home_error};

/// Optional per-step extras for `--notes-from`: `<step-id>.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepExtras {
    #[serde(default)]
    artifacts: Vec<Value>,
    #[serde(default)]
    context: Map<String, Value>,
}

/// How many times in a row an editor may come back without notes before the session is
/// paused (an editor that returns at once must not spin).
const EMPTY_EDITS_BEFORE_PAUSE: u32 = 3;

pub(crate) async fn run(ctx: &Ctx, args: RunArgs) -> Result<Exit, ApiError> {
    if !ctx.home.is_initialised() {
        let report = ctx.home.init().map_err(home_error)?;
        if !ctx.out.json {
            eprintln!("Initialised {} (first use).", report.home.display());
        }
    }
    let engine = ctx.engine().await?;
    let mut reply = match (&args.resume, &args.workflow, &args.goal) {
        (Some(session), _, _) => {
            let id = engine.session_id(&SessionRef::parse(session))?;
            engine.rehydrate(&SessionRef::Id(id)).await?
        }
        (None, Some(workflow), Some(goal)) => {
            let workflow = ctx
                .catalog(args.setup.workspace.as_deref())
                .resolve(workflow)?;
            engine
                .start(StartRequest {
                    workflow,
                    goal: goal.clone(),
                    workspace: args.setup.workspace()?,
                    context: args.setup.context()?,
                    mode: SessionMode::Interactive,
                    parent: None,
                })
                .await?
        }
        (None, _, _) => {
            return Err(ApiError::invalid_input(
                "`worktrain run` needs a workflow and --goal, or --resume SESSION",
                "e.g. `worktrain run quick-task --goal \"…\"`",
            ));
        }
    };
    let session = reply.response.session_id;
    let paused = |step: &str, why: &str| {
        if !ctx.out.json {
            say!();
            say!(
                "{why}; session {session} is paused at step `{step}`.\nContinue it with `worktrain run --resume {session}`."
            );
        }
        Ok(Exit::Ok)
    };
    // The output last submitted, when the engine blocked it: the same output again would
    // be blocked the same way, so the run stops instead of looping.
    let mut blocked_output: Option<worktrain_core::ids::Sha256Hash> = None;
    loop {
        show(ctx, &reply);
        let response = &reply.response;
        let (Some(step), Some(token)) = (&response.step, response.tokens.advance.clone()) else {
            if !ctx.out.json {
                say!(
                    "Inspect it with `worktrain session show {session}` or `worktrain session log {session}`."
                );
            }
            return Ok(Exit::Ok);
        };
        let submission = match &args.notes_from {
            Some(dir) => scripted(dir, step)?,
            None => match interactive(step)? {
                Notes::Submit(s) => s,
                Notes::InputClosed => return paused(step.id.as_str(), "Input closed"),
                Notes::NothingWritten => {
                    return paused(
                        step.id.as_str(),
                        &format!(
                            "The editor returned {EMPTY_EDITS_BEFORE_PAUSE} times without notes"
                        ),
                    );
                }
            },
        };
        if response.outcome == Outcome::Blocked && blocked_output == Some(submission.output_hash())
        {
            if args.notes_from.is_some() {
                // The same files would be submitted again: stop instead of looping.
                return Ok(Exit::Blocked);
            }
            return paused(
                step.id.as_str(),
                "The same output was blocked again (fix the blockers above first)",
            );
        }
        let hash = submission.output_hash();
        reply = engine.advance(&token, submission).await?;
        blocked_output = (reply.response.outcome == Outcome::Blocked).then_some(hash);
    }
}

fn show(ctx: &Ctx, reply: &Reply) {
    if ctx.out.json {
        ctx.out.raw_json(&reply.bytes);
    } else {
        print_response(&reply.response, reply.replayed, Audience::Run);
    }
}

fn scripted(dir: &Path, step: &StepView) -> Result<Submission, ApiError> {
    let notes_path = dir.join(format!("{}.md", step.id));
    let notes = match std::fs::read_to_string(&notes_path) {
        Ok(n) => Some(n),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && step.notes_optional => None,
        Err(e) => {
            return Err(ApiError::invalid_input(
                format!(
                    "cannot read notes for step `{}` from {}: {e}",
                    step.id,
                    notes_path.display()
                ),
                format!("write the step's notes to {}", notes_path.display()),
            ));
        }
    };
    let extras_path = dir.join(format!("{}.json", step.id));
    let extras = match std::fs::read_to_string(&extras_path) {
        Ok(text) => serde_json::from_str::<StepExtras>(&text).map_err(|e| {
            ApiError::invalid_input(
                format!("{}:{}:{}: {e}", extras_path.display(), e.line(), e.column()),
                "the file holds {\"artifacts\": [...], \"context\": {...}}",
            )
        })?,
        Err(_) => StepExtras::default(),
    };
    Ok(Submission {
        notes,
        artifacts: extras.artifacts,
        context: extras.context,
    })
}

/// What asking for a step's notes came back with.
enum Notes {
    /// Notes to submit.
    Submit(Submission),
    /// Input ended before any notes.
    InputClosed,
    /// The editor kept returning without notes.
    NothingWritten,
}

/// Ask for notes: `$EDITOR` when attached to a terminal, otherwise stdin until a line
/// with a single `.` or end of input. An editor that comes back without notes (it saved
/// nothing, or returned at once) is opened again after the user presses Enter; after
/// [`EMPTY_EDITS_BEFORE_PAUSE`] such rounds, or `q`, the session is paused.
fn interactive(step: &StepView) -> Result<Notes, ApiError> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .ok()
        .filter(|e| !e.trim().is_empty());
    if let (Some(editor), true) = (editor, std::io::stdin().is_terminal()) {
        for round in 1..=EMPTY_EDITS_BEFORE_PAUSE {
            let submission = edit(&editor, step)?;
            if submission
                .notes
                .as_deref()
                .is_some_and(|n| !n.trim().is_empty())
                || step.notes_optional
            {
                return Ok(Notes::Submit(submission));
            }
            if round == EMPTY_EDITS_BEFORE_PAUSE {
                break;
            }
            say!(
                "No notes were written in the editor (`{editor}`). Press Enter to edit again, or type `q` and Enter to pause:"
            );
            let _ = std::io::stdout().flush();
            let mut answer = String::new();
            let read = std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .map_err(|e| ApiError::invalid_input(format!("cannot read stdin: {e}"), "retry"))?;
            if read == 0 {
                return Ok(Notes::InputClosed);
            }
            if answer.trim().eq_ignore_ascii_case("q") {
                return Ok(Notes::NothingWritten);
            }
        }
        return Ok(Notes::NothingWritten);
    }
    say!(
        "Write your notes for `{}`; finish with a line containing only `.` (or end of input):",
        step.id
    );
    let _ = std::io::stdout().flush();
    let stdin = std::io::stdin();
    let mut notes = String::new();
    let mut saw_input = false;
    for line in stdin.lock().lines() {
        let line =
            line.map_err(|e| ApiError::invalid_input(format!("cannot read stdin: {e}"), "retry"))?;
        saw_input = true;
        if line.trim() == "." {
            break;
        }
        notes.push_str(&line);
        notes.push('\n');
    }
    if !saw_input {
        return Ok(Notes::InputClosed);
    }
    Ok(Notes::Submit(Submission {
        notes: Some(notes),
        ..Submission::default()
    }))
}

const EDITOR_MARKER: &str =
    "<!-- worktrain: write your notes above this line; everything below is ignored -->";

fn edit(editor: &str, step: &StepView) -> Result<Submission, ApiError> {
    let path: PathBuf =
        std::env::temp_dir().join(format!("worktrain-{}-{}.md", step.id, std::process::id()));
    let template = format!(
        "\n\n{EDITOR_MARKER}\n\n# {}\n\n{}\n",
        step.title, step.prompt
    );
    std::fs::write(&path, template).map_err(|e| {
        ApiError::invalid_input(
            format!("cannot write {}: {e}", path.display()),
            "check $TMPDIR",
        )
    })?;
    let mut parts = editor.split_whitespace();
    let program = parts.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(parts)
        .arg(&path)
        .status()
        .map_err(|e| {
            ApiError::invalid_input(
                format!("cannot start editor `{editor}`: {e}"),
                "set $EDITOR to an installed editor",
            )
        })?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    if !status.success() {
        return Err(ApiError::invalid_input(
            format!("editor `{editor}` exited with {status}"),
            "save and quit the editor normally to submit",
        ));
    }
    let notes = text
        .split(EDITOR_MARKER)
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(Submission {
        notes: Some(notes),
        ..Submission::default()
    })
}
