//! One WorkRail document → one worktrain workflow definition, with notes.
//!
//! The mapping (docs/workflows.md, "Coming from WorkRail", has the table):
//!
//! - template calls are expanded inline, as WorkRail's compiler does (ids
//!   `<call>.<step>`, `{arg}` substituted, the routine's `metaGuidance` as step guidance);
//! - loop bodies given by reference are moved into their loop; WorkRail never runs them
//!   at the top level;
//! - prompts are composed as WorkRail composes them ([`crate::compose`]);
//! - conditions keep WorkRail's semantics ([`crate::cond`]);
//! - `while`/`until` loops driven by `wr.loop_control` artifacts become decision loops,
//!   context-driven ones `while` loops checked before every step of a pass (WorkRail's
//!   `until` is checked before each pass too: it becomes `while: {not: …}`);
//! - parallel steps become the step WorkRail shows the agent: a prompt naming the
//!   delegations to start, one prompt fragment per conditional delegation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use worktrain_core::condition::{Condition, ContextPath};
use worktrain_core::contract::ContractName;
use worktrain_core::ids::{StepId, WorkflowId};
use worktrain_core::workflow::{
    CURRENT_SCHEMA_VERSION, Confirmation, DimensionSpec, ForCount, ForEachSpec, GateKind,
    LoopDefinition, LoopSpec, OutputContractSpec, PromptFragment, StepDefinition, StepEntry,
    WorkflowDefinition,
};

use crate::compose::{self, literal, section, template};
use crate::cond::{self, Cond, Scope};
use crate::registry::{self, Feature};
use crate::report::{NoteKind, Notes};
use crate::source::{WrBody, WrStep, WrWorkflow};

/// The context key assessment levels are written to (WorkRail records assessments
/// outside the context; a distinct key keeps them from colliding with the workflow's own
/// context variables).
pub const ASSESSMENT_KEY: &str = "workrail_assessments";

/// A WorkRail document available to template calls (routines).
#[derive(Debug, Clone)]
pub struct LibraryDoc {
    /// Where it was read from.
    pub location: String,
    /// The document.
    pub workflow: WrWorkflow,
}

/// The result of converting one document.
#[derive(Debug)]
pub struct Converted {
    /// The worktrain workflow.
    pub definition: WorkflowDefinition,
    /// Informational WorkRail fields, for the header comment of the written file.
    pub header: Vec<String>,
}

/// Why a document cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl From<cond::Unconvertible> for Failure {
    fn from(u: cond::Unconvertible) -> Self {
        Failure(u.0)
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s)
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// Workflow-wide settings the steps need.
struct Wf<'a> {
    features: Vec<&'static Feature>,
    assessments: &'a [crate::source::WrAssessment],
    bindings: Vec<(String, String)>,
}

/// Convert `doc`, found at `source`. `library` holds the documents template calls may
/// expand.
pub fn convert(doc: &WrWorkflow, library: &[LibraryDoc], notes: &mut Notes) -> Result<Converted> {
    let mut header = Vec::new();
    let problems = precheck(doc, notes);
    let id = doc.id.as_deref().and_then(|i| WorkflowId::new(i).ok());
    let (Some(id), true) = (id, problems.is_empty()) else {
        let mut reasons = problems;
        reasons.extend(
            notes
                .0
                .iter()
                .filter(|n| n.kind == NoteKind::Inconsistent)
                .map(|n| format!("{}: {}", n.at, n.message)),
        );
        return Err(Failure(format!(
            "not a valid WorkRail workflow: {}",
            reasons.join("; ")
        )));
    };
    let name = doc.name.clone().unwrap_or_default().trim().to_owned();
    let description = doc
        .description
        .clone()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let version = match doc.version.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => {
            notes.add(
                NoteKind::Inconsistent,
                "version",
                "`version` is missing (WorkRail's schema requires it); the converted workflow says `0.0.0`",
            );
            "0.0.0".to_owned()
        }
    };

    // Informational fields: kept in the header comment of the written file.
    if let Some(about) = &doc.about {
        header.push("About:".into());
        header.extend(about.lines().map(|l| format!("  {l}")));
        notes.add(
            NoteKind::NotConverted,
            "about",
            "kept in the file's header comment (worktrain has `description` only)",
        );
    }
    informational(
        &mut header,
        notes,
        "examples",
        "Example goals:",
        &doc.examples,
    );
    informational(
        &mut header,
        notes,
        "preconditions",
        "Preconditions:",
        &doc.preconditions,
    );
    informational(
        &mut header,
        notes,
        "clarificationPrompts",
        "Questions to ask up front:",
        &doc.clarification_prompts,
    );
    if let Some(p) = &doc.recommended_preferences {
        header.push(format!("Recommended preferences: {p}"));
        notes.add(
            NoteKind::NotConverted,
            "recommendedPreferences",
            "kept in the header comment; worktrain has no autonomy/risk preferences",
        );
    }
    if let Some(t) = &doc.model_tier {
        header.push(format!("Model tier: {t}"));
        notes.add(NoteKind::NotConverted, "modelTier", format!("`{t}` is kept in the header comment; worktrain chooses models per agent profile, not per workflow"));
    }
    if let Some(v) = &doc.validated_against_spec_version {
        header.push(format!(
            "Validated against WorkRail authoring spec version {v}"
        ));
    }
    if !doc.function_definitions.is_empty() {
        header.push("Function definitions:".into());
        for f in &doc.function_definitions {
            header.push(format!("  {f}"));
        }
        notes.add(NoteKind::NotConverted, "functionDefinitions", "WorkRail shows function definitions only when a session is resumed; kept in the header comment");
    }
    match doc.metrics_profile.as_deref() {
        None | Some("none") => {}
        Some(p) => notes.add(
            NoteKind::NotConverted,
            "metricsProfile",
            format!("`{p}`: WorkRail appends a footer asking the agent to report `metrics_*` context keys; worktrain records commits, diffs and outcomes of a session itself, so no footer is added"),
        ),
    }
    let tags: Vec<String> = doc
        .extra
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    // Workflow-level guidance: metaGuidance and references.
    let mut guidance: Vec<String> = doc.meta_guidance.iter().map(|g| literal(g)).collect();
    if !doc.meta_guidance.is_empty() {
        notes.add(NoteKind::Mapped, "metaGuidance", "became `guidance`: WorkRail surfaces it when a session starts or resumes, worktrain with every step");
    }
    for r in &doc.references {
        guidance.push(literal(&format!(
            "Reference `{}` — {}: {}{} ({})",
            r.id,
            r.title,
            r.source,
            if r.authoritative {
                ", authoritative"
            } else {
                ""
            },
            r.purpose
        )));
    }
    if !doc.references.is_empty() {
        notes.add(NoteKind::Mapped, "references", "each reference became a `guidance` line naming the document (WorkRail delivers them when a session starts)");
        if doc
            .references
            .iter()
            .any(|r| r.resolve_from.as_deref() == Some("package"))
        {
            notes.add(NoteKind::Differs, "references", "a reference resolved from WorkRail's package points at a file worktrain does not ship");
        }
    }

    let mut features = Vec::new();
    for (i, f) in doc.features.iter().enumerate() {
        let feat = registry::feature(f).ok_or_else(|| {
            Failure(format!(
                "features[{i}]: unknown feature `{f}` (WorkRail's compiler rejects it too; known: {})",
                registry::FEATURES.iter().map(|f| f.id).collect::<Vec<_>>().join(", ")
            ))
        })?;
        features.push(feat);
        notes.add(NoteKind::Mapped, format!("features[{i}]"), format!("`{f}` is applied to the steps written with promptBlocks: its text is part of their prompts"));
    }
    let wf = Wf {
        features,
        assessments: &doc.assessments,
        bindings: doc
            .extension_points
            .iter()
            .map(|e| (e.slot_id.clone(), e.default.clone()))
            .collect(),
    };

    // Compile-time expansion: template calls, then loop bodies by reference.
    let steps = expand_templates(&doc.steps, "steps", library, notes)?;
    check_unique_ids(&steps)?;
    let by_id: BTreeMap<&str, &WrStep> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut body_refs: BTreeSet<String> = BTreeSet::new();
    for s in &steps {
        if let Some(WrBody::Ref(r)) = &s.body {
            body_refs.insert(r.clone());
        }
    }
    let mut entries = Vec::new();
    let mut referenced_twice: BTreeSet<String> = BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        if body_refs.contains(&s.id) {
            notes.add(
                NoteKind::Mapped,
                at.clone(),
                format!(
                    "`{}` is a loop body: moved into its loop (WorkRail never runs it on its own)",
                    s.id
                ),
            );
            continue;
        }
        entries.push(entry(s, &at, &wf, &by_id, &mut referenced_twice, notes)?);
    }
    if entries.is_empty() {
        return Err(Failure(
            "`steps` has no step to run (WorkRail's schema requires at least one)".into(),
        ));
    }

    Ok(Converted {
        definition: WorkflowDefinition {
            schema: None,
            schema_version: CURRENT_SCHEMA_VERSION,
            id,
            name: name.chars().take(200).collect(),
            description,
            version,
            tags,
            guidance,
            inputs: Vec::new(),
            unattended: false,
            steps: entries,
        },
        header,
    })
}

/// What WorkRail's schema requires of the workflow itself: hard problems are returned
/// (the file cannot be converted), softer ones become `inconsistent` notes.
fn precheck(doc: &WrWorkflow, notes: &mut Notes) -> Vec<String> {
    let mut hard = Vec::new();
    match doc.id.as_deref() {
        None => hard.push("`id` is missing".to_owned()),
        Some(id) => {
            if let Err(e) = WorkflowId::new(id) {
                hard.push(format!("`id`: {e}"));
            } else if id.len() < 3 {
                notes.add(
                    NoteKind::Inconsistent,
                    "id",
                    "WorkRail's schema requires at least 3 characters",
                );
            }
        }
    }
    for (field, v) in [("name", &doc.name), ("description", &doc.description)] {
        match v.as_deref().map(str::trim) {
            None => hard.push(format!("`{field}` is missing")),
            Some("") => hard.push(format!("`{field}` is empty")),
            Some(_) => {}
        }
    }
    if doc.steps.is_empty() {
        hard.push("`steps` is empty (at least one step is required)".to_owned());
    }
    for (field, items) in [
        ("preconditions", doc.preconditions.clone()),
        ("clarificationPrompts", doc.clarification_prompts.clone()),
        (
            "metaGuidance",
            doc.meta_guidance
                .iter()
                .map(|g| Value::String(g.clone()))
                .collect(),
        ),
        ("examples", doc.examples.clone()),
    ] {
        let mut seen: Vec<&Value> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            if it.as_str().is_some_and(|s| s.trim().is_empty()) {
                notes.add(
                    NoteKind::Inconsistent,
                    format!("{field}[{i}]"),
                    "an empty entry (WorkRail's schema requires text)",
                );
            }
            if seen.contains(&it) {
                notes.add(
                    NoteKind::Inconsistent,
                    field,
                    format!("`{field}` repeats {it} (WorkRail's schema requires unique entries)"),
                );
            }
            seen.push(it);
        }
    }
    if let Some(d) = &doc.description
        && d.chars().count() > 512
    {
        notes.add(
            NoteKind::Inconsistent,
            "description",
            "longer than the 512 characters WorkRail's schema allows",
        );
    }
    for (k, v) in &doc.extra {
        match k.as_str() {
            "$schema" => {}
            "tags" => notes.add(
                NoteKind::Inconsistent,
                "tags",
                "`tags` is not in WorkRail's schema; used as the workflow's tags",
            ),
            _ => {
                let shown = excerpt(v, 80);
                notes.add(
                    NoteKind::Inconsistent,
                    k.clone(),
                    format!("`{k}` is not a field of WorkRail's workflow schema (WorkRail rejects the file); not converted: {shown}"),
                );
            }
        }
    }
    hard
}

fn informational(
    header: &mut Vec<String>,
    notes: &mut Notes,
    field: &str,
    title: &str,
    items: &[Value],
) {
    if items.is_empty() {
        return;
    }
    header.push(title.into());
    for it in items {
        header.push(format!(
            "  - {}",
            it.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| it.to_string())
        ));
    }
    notes.add(
        NoteKind::NotConverted,
        field,
        "kept in the file's header comment",
    );
}

fn check_unique_ids(steps: &[WrStep]) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut all: Vec<&str> = Vec::new();
    for s in steps {
        all.push(&s.id);
        if let Some(WrBody::Steps(body)) = &s.body {
            all.extend(body.iter().map(|b| b.id.as_str()));
        }
    }
    for id in all {
        if !seen.insert(id) {
            return Err(Failure(format!(
                "step id `{id}` is used twice (WorkRail's compiler rejects duplicate step ids)"
            )));
        }
    }
    Ok(())
}

/// Expand `templateCall` steps (also inside inline loop bodies).
fn expand_templates(
    steps: &[WrStep],
    at: &str,
    library: &[LibraryDoc],
    notes: &mut Notes,
) -> Result<Vec<WrStep>> {
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let here = format!("{at}[{i}]");
        if let Some(WrBody::Steps(body)) = &s.body {
            let mut s = s.clone();
            s.body = Some(WrBody::Steps(expand_templates(
                body,
                &format!("{here}.body"),
                library,
                notes,
            )?));
            out.push(s);
            continue;
        }
        let Some(call) = &s.template_call else {
            out.push(s.clone());
            continue;
        };
        out.extend(expand_call(s, call, &here, library, notes)?);
    }
    Ok(out)
}

fn expand_call(
    caller: &WrStep,
    call: &crate::source::WrTemplateCall,
    at: &str,
    library: &[LibraryDoc],
    notes: &mut Notes,
) -> Result<Vec<WrStep>> {
    let name = call.template_id.strip_prefix("wr.templates.routine.").ok_or_else(|| {
        Failure(format!(
            "{at}.templateCall: `{}` is not a routine template (`wr.templates.routine.<name>`); WorkRail has no other templates",
            call.template_id
        ))
    })?;
    let candidates = [
        name.to_owned(),
        format!("routine-{name}"),
        format!("wr.routine-{name}"),
        format!("wr.{name}"),
    ];
    let routine = library
        .iter()
        .find(|d| d.workflow.id.as_deref().is_some_and(|id| candidates.iter().any(|c| c == id)))
        .ok_or_else(|| {
            Failure(format!(
                "{at}.templateCall: the routine `{}` is not among the imported files (looked for ids {}); import its file in the same run, or pass its directory with --routines",
                call.template_id,
                candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let ignored: Vec<&str> = [
        ("title", caller.title.is_some()),
        ("runCondition", caller.run_condition.is_some()),
        ("requireConfirmation", caller.require_confirmation.is_some()),
        ("prompt", caller.prompt.is_some()),
        ("promptBlocks", caller.prompt_blocks.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if !ignored.is_empty() {
        notes.add(
            NoteKind::Inconsistent,
            at.to_owned(),
            format!("WorkRail replaces a template call by the routine's steps and ignores the call's {}; so does the import", ignored.join(", ")),
        );
    }
    notes.add(
        NoteKind::Mapped,
        format!("{at}.templateCall"),
        format!(
            "expanded inline from routine `{}` ({}), as WorkRail's compiler does: ids `{}.<step>`, arguments substituted, the routine's metaGuidance as step guidance",
            routine.workflow.id.as_deref().unwrap_or_default(),
            routine.location,
            caller.id
        ),
    );
    let mut out = Vec::new();
    for s in &routine.workflow.steps {
        if s.template_call.is_some() {
            return Err(Failure(format!(
                "{at}.templateCall: routine `{}` step `{}` contains a templateCall; WorkRail does not allow recursive injection",
                call.template_id, s.id
            )));
        }
        if s.kind.is_some() || s.body.is_some() {
            return Err(Failure(format!(
                "{at}.templateCall: routine `{}` step `{}` is a loop or parallel step; WorkRail's injection expands standard steps only",
                call.template_id, s.id
            )));
        }
        let title = s.title.clone().ok_or_else(|| {
            Failure(format!(
                "{at}.templateCall: routine step `{}` has no title",
                s.id
            ))
        })?;
        let prompt = s.prompt.clone().ok_or_else(|| {
            Failure(format!(
                "{at}.templateCall: routine step `{}` has no prompt (WorkRail's injection requires one)",
                s.id
            ))
        })?;
        let mut e = s.clone();
        e.id = format!("{}.{}", caller.id, s.id);
        e.title = Some(substitute_args(
            &title,
            &call.args,
            &call.template_id,
            &s.id,
        )?);
        e.prompt = Some(substitute_args(
            &prompt,
            &call.args,
            &call.template_id,
            &s.id,
        )?);
        if !routine.workflow.meta_guidance.is_empty() {
            let mut g = s.guidance.clone().unwrap_or_default();
            g.extend(routine.workflow.meta_guidance.iter().cloned());
            e.guidance = Some(g);
        }
        out.push(e);
    }
    Ok(out)
}

/// `{arg}` (single braces, not `{{…}}`) → the argument; missing or non-primitive
/// arguments are errors, as in WorkRail.
fn substitute_args(
    text: &str,
    args: &BTreeMap<String, Value>,
    template: &str,
    step: &str,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut missing = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        let prev_open = i > 0 && chars[i - 1] == '{';
        if c == '{'
            && !prev_open
            && let Some(end) = chars[i + 1..].iter().position(|&x| x == '{' || x == '}')
        {
            let close = i + 1 + end;
            let next_close = chars.get(close + 1) == Some(&'}');
            {
                if chars[close] == '}' && end > 0 && !next_close {
                    let name: String = chars[i + 1..close].iter().collect();
                    match args.get(&name) {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                            out.push_str(&v.to_string())
                        }
                        Some(_) => {
                            return Err(Failure(format!(
                                "template `{template}` step `{step}`: argument `{name}` must be a string, number or boolean"
                            )));
                        }
                        None => {
                            missing.push(name.clone());
                            out.push('{');
                            out.push_str(&name);
                            out.push('}');
                        }
                    }
                    i = close + 1;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    if !missing.is_empty() {
        return Err(Failure(format!(
            "template `{template}` step `{step}` uses argument(s) {} that the templateCall does not pass",
            missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

fn step_id(id: &str, at: &str) -> Result<StepId> {
    StepId::new(id).map_err(|e| Failure(format!("{at}.id: {e}")))
}

/// One top-level entry.
fn entry(
    s: &WrStep,
    at: &str,
    wf: &Wf<'_>,
    by_id: &BTreeMap<&str, &WrStep>,
    referenced_twice: &mut BTreeSet<String>,
    notes: &mut Notes,
) -> Result<StepEntry> {
    match s.kind.as_deref() {
        Some("loop") => loop_entry(s, at, wf, by_id, referenced_twice, notes).map(StepEntry::Loop),
        Some("parallel") => {
            parallel_step(s, at, &Scope::default(), None, notes).map(StepEntry::Step)
        }
        None => standard_step(s, at, wf, &Scope::default(), None, notes).map(StepEntry::Step),
        Some(other) => Err(Failure(format!(
            "{at}.type: `{other}` is not a WorkRail step type (loop, parallel, or none for a standard step)"
        ))),
    }
}

/// How the enclosing loop affects a body step.
struct InLoop {
    /// The step that makes the loop's decision (a `wr.loop_control` step).
    decision: Option<String>,
    /// The loop condition, re-checked before this step (WorkRail checks a context-driven
    /// loop's condition before every step of a pass).
    guard: Cond,
}

fn note_unused(s: &WrStep, at: &str, notes: &mut Notes) {
    if let Some(t) = &s.model_tier {
        notes.add(
            NoteKind::NotConverted,
            format!("{at}.modelTier"),
            format!("`{t}` is a model recommendation; worktrain chooses models per agent profile"),
        );
    }
    if s.ask_for_files.is_some() || s.has_validation.is_some() {
        notes.add(NoteKind::NotConverted, at.to_owned(), "`askForFiles`/`hasValidation` are hints of WorkRail's first engine that no prompt shows; not converted");
    }
    for (k, v) in [
        ("functionDefinitions", &s.function_definitions),
        ("functionCalls", &s.function_calls),
        ("functionReferences", &s.function_references),
    ] {
        if v.is_some() {
            notes.add(
                NoteKind::NotConverted,
                format!("{at}.{k}"),
                "WorkRail shows function definitions only when a session is resumed; not converted",
            );
        }
    }
    for (k, v) in [
        ("audit", &s.audit),
        ("verification", &s.verification),
        ("synthesis", &s.synthesis),
    ] {
        if v.is_some() {
            notes.add(NoteKind::NotConverted, format!("{at}.{k}"), format!("WorkRail injects a virtual `{k}` step generated by its engine; worktrain has no equivalent: add a step for it to the converted workflow if you need it"));
        }
    }
    for (k, v) in &s.extra {
        let shown = excerpt(v, 60);
        notes.add(
            NoteKind::Inconsistent,
            format!("{at}.{k}"),
            format!("not a field of WorkRail's step schema; not converted: {shown}"),
        );
    }
    if let Some(t) = &s.title
        && compose::has_tokens(t)
    {
        notes.add(
            NoteKind::Differs,
            format!("{at}.title"),
            "WorkRail substitutes `{{…}}` variables in titles; worktrain shows titles as written",
        );
    }
}

fn title_of(s: &WrStep, at: &str) -> Result<String> {
    match s.title.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => Ok(t.chars().take(200).collect()),
        _ => Err(Failure(format!(
            "{at}: step `{}` has no title (WorkRail's schema requires one)",
            s.id
        ))),
    }
}

/// A standard step.
fn standard_step(
    s: &WrStep,
    at: &str,
    wf: &Wf<'_>,
    scope: &Scope,
    in_loop: Option<&InLoop>,
    notes: &mut Notes,
) -> Result<StepDefinition> {
    note_unused(s, at, notes);
    let id = step_id(&s.id, at)?;
    let title = title_of(s, at)?;
    for k in ["loop", "body", "parallelDelegations"] {
        let set = match k {
            "loop" => s.loop_.is_some(),
            "body" => s.body.is_some(),
            _ => s.parallel_delegations.is_some(),
        };
        if set {
            notes.add(NoteKind::Inconsistent, format!("{at}.{k}"), format!("`{k}` on a step without the matching `type`; WorkRail ignores it, so does the import"));
        }
    }

    // The base prompt: raw, or rendered blocks (with features).
    let base = match (&s.prompt, &s.prompt_blocks) {
        (Some(_), Some(_)) => {
            return Err(Failure(format!(
                "{at}: step `{}` declares both prompt and promptBlocks (WorkRail's compiler rejects that: use exactly one)",
                s.id
            )));
        }
        (Some(p), None) => p.clone(),
        (None, Some(b)) => {
            let mut b = b.clone();
            for k in b.extra.keys() {
                notes.add(
                    NoteKind::Inconsistent,
                    format!("{at}.promptBlocks.{k}"),
                    "not a promptBlocks section; WorkRail's schema rejects it; not converted",
                );
            }
            compose::apply_features(&mut b, &wf.features);
            compose::render_blocks(&b, &format!("{at}.promptBlocks"))?
        }
        (None, None) => {
            return Err(Failure(format!(
                "{at}: step `{}` has neither prompt nor promptBlocks",
                s.id
            )));
        }
    };
    let base = compose::resolve_bindings(&base, &wf.bindings, at, notes)?;

    // What WorkRail's first engine put before the prompt: the role and the guidance.
    let mut prefix: Vec<String> = Vec::new();
    if let Some(role) = &s.agent_role {
        prefix.push(format!("## Agent Role Instructions\n{role}\n"));
    }
    if let Some(g) = s.guidance.as_ref().filter(|g| !g.is_empty()) {
        prefix.push(format!(
            "## Step Guidance\n{}\n",
            g.iter()
                .map(|x| format!("- {x}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let mut prompt = if prefix.is_empty() {
        String::new()
    } else {
        literal(&(prefix.join("\n") + "\n"))
    };
    prompt.push_str(&template(&base, scope, &format!("{at}.prompt"), notes));

    // System sections, in WorkRail's order: output requirements, contract, assessment.
    if let Some(v) = &s.validation_criteria {
        let reqs = compose::validation_requirements(v);
        prompt.push_str(&literal(&section("OUTPUT REQUIREMENTS:", &reqs)));
        notes.add(
            NoteKind::Differs,
            format!("{at}.validationCriteria"),
            if reqs.is_empty() {
                "WorkRail checks the step's notes against these rules; worktrain does not, and WorkRail does not describe them in the prompt either".to_owned()
            } else {
                "WorkRail checks the step's notes against these rules; worktrain does not check them, the prompt states them (as WorkRail's does)".to_owned()
            },
        );
    }
    let mut contract: Option<OutputContractSpec> = None;
    let mut notes_optional = s.notes_optional.unwrap_or(false);
    if let Some(c) = &s.output_contract {
        notes_optional = true;
        for k in c.extra.keys() {
            notes.add(
                NoteKind::Inconsistent,
                format!("{at}.outputContract.{k}"),
                "not a field of WorkRail's outputContract; not converted",
            );
        }
        let required = c.required.unwrap_or(true);
        if c.contract_ref == registry::LOOP_CONTROL {
            match in_loop {
                Some(l) if l.decision.as_deref() == Some(s.id.as_str()) => {
                    contract = Some(OutputContractSpec {
                        contract: ContractName::LoopControl,
                        required,
                        dimensions: BTreeMap::new(),
                        context_key: None,
                    });
                    notes.add(NoteKind::Mapped, format!("{at}.outputContract"), "`wr.contracts.loop_control` became the loop's decision step (`loop_control` artifact: {\"kind\": \"loop_control\", \"decision\": \"continue\"|\"stop\"}; WorkRail's kind is `wr.loop_control`)");
                }
                Some(InLoop { decision: Some(_), .. }) => notes.add(
                    NoteKind::Differs,
                    format!("{at}.outputContract"),
                    "a second `wr.loop_control` step in the same loop: worktrain loops have one decision step (the last one); this step's artifact is not checked and does not end the loop",
                ),
                Some(InLoop { decision: None, .. }) => notes.add(
                    NoteKind::Inconsistent,
                    format!("{at}.outputContract"),
                    "the loop is driven by its condition or count, so WorkRail ignores this `wr.loop_control` artifact; the converted step does not check it either",
                ),
                None => notes.add(
                    NoteKind::Differs,
                    format!("{at}.outputContract"),
                    "`wr.loop_control` outside a loop: in WorkRail a `stop` here skips the next artifact-driven loop; worktrain decisions belong to their loop, so this step's artifact is not checked and the next loop is always entered",
                ),
            }
        } else {
            prompt.push_str(&literal(&compose::contract_section(
                &c.contract_ref,
                required,
            )));
            notes.add(
                NoteKind::Differs,
                format!("{at}.outputContract"),
                if registry::contract_fields(&c.contract_ref).is_some() {
                    format!("`{}` has no worktrain contract of the same shape: the prompt states its fields, the artifact is recorded but not checked", c.contract_ref)
                } else {
                    format!("`{}` is not a contract this importer knows: the artifact is recorded but not checked", c.contract_ref)
                },
            );
        }
    }
    if let Some(refs) = s.assessment_refs.as_ref().filter(|r| !r.is_empty()) {
        let (spec, lines) = assessment_contract(s, refs, at, wf, notes)?;
        prompt.push_str(&literal(&section(
            "ASSESSMENT REQUIREMENTS (System):",
            &lines,
        )));
        if contract.is_some() {
            notes.add(NoteKind::Differs, format!("{at}.assessmentRefs"), "this step already decides its loop: worktrain steps have one contract, so the assessment is described in the prompt but not checked");
        } else {
            contract = Some(spec);
        }
    } else if s.assessment_consequences.is_some() {
        notes.add(NoteKind::Inconsistent, format!("{at}.assessmentConsequences"), "consequences without `assessmentRefs` never fire (WorkRail's schema requires a ref); not converted");
    }

    // Conditions.
    let mut run = cond::convert(
        s.run_condition.as_ref(),
        &format!("{at}.runCondition"),
        scope,
        notes,
    )?;
    if let Some(l) = in_loop {
        run = l.guard.clone().and(run);
    }
    let confirmation = confirmation(
        s.require_confirmation.as_ref(),
        &format!("{at}.requireConfirmation"),
        scope,
        notes,
    )?;

    let fragments = fragments(s, at, scope, notes)?;

    Ok(StepDefinition {
        id,
        title,
        prompt,
        prompt_fragments: fragments,
        run_condition: run.into_condition(),
        require_confirmation: confirmation,
        output_contract: contract,
        notes_optional,
        context_outputs: Vec::new(),
        jump_if: None,
        parallel: None,
    })
}

fn fragments(
    s: &WrStep,
    at: &str,
    scope: &Scope,
    notes: &mut Notes,
) -> Result<Vec<PromptFragment>> {
    let mut out = Vec::new();
    for (i, f) in s.prompt_fragments.iter().flatten().enumerate() {
        let fat = format!("{at}.promptFragments[{i}]");
        let when = cond::convert(f.when.as_ref(), &format!("{fat}.when"), scope, notes)?;
        if f.text.trim().is_empty() {
            notes.add(
                NoteKind::Inconsistent,
                fat,
                "an empty fragment text adds nothing; not converted",
            );
            continue;
        }
        out.push(PromptFragment {
            when: when.into_explicit(),
            text: template(&f.text, scope, &format!("{fat}.text"), notes),
        });
    }
    Ok(out)
}

/// WorkRail's gate: `true` and a bare condition are `coordinator_eval` gates; the object
/// form names its kind and an optional `condition`.
fn confirmation(
    v: Option<&Value>,
    at: &str,
    scope: &Scope,
    notes: &mut Notes,
) -> Result<Confirmation> {
    let gate = |kind: GateKind, when: Cond| -> Confirmation {
        match when {
            Cond::Always => Confirmation::Gate { kind, when: None },
            Cond::Never => Confirmation::Never,
            Cond::Is(c) => Confirmation::Gate {
                kind,
                when: Some(c),
            },
        }
    };
    let out = match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(Confirmation::Never),
        Some(Value::Bool(true)) => gate(GateKind::CoordinatorEval, Cond::Always),
        Some(Value::Object(m)) => match m.get("kind").and_then(Value::as_str) {
            Some(k @ ("coordinator_eval" | "human_approval")) => {
                let kind = if k == "human_approval" {
                    GateKind::HumanApproval
                } else {
                    GateKind::CoordinatorEval
                };
                let when = if m.contains_key("condition") {
                    cond::convert(m.get("condition"), &format!("{at}.condition"), scope, notes)?
                } else {
                    Cond::Always
                };
                gate(kind, when)
            }
            _ => gate(
                GateKind::CoordinatorEval,
                cond::convert(v, at, scope, notes)?,
            ),
        },
        Some(other) => {
            notes.add(NoteKind::Inconsistent, at, format!("`requireConfirmation` must be a boolean, a condition or {{kind, condition?}}, got {other}; WorkRail treats it as a gate"));
            gate(GateKind::CoordinatorEval, Cond::Always)
        }
    };
    if !matches!(out, Confirmation::Never) {
        notes.add(NoteKind::Mapped, at, "a confirmation gate, evaluated when the step is entered as in WorkRail; `true` and bare conditions are `coordinator_eval` gates, WorkRail's default kind");
    }
    Ok(out)
}

/// Merge the step's assessments into one worktrain `assessment` contract, and the lines
/// of WorkRail's ASSESSMENT REQUIREMENTS section that describe them.
fn assessment_contract(
    s: &WrStep,
    refs: &[String],
    at: &str,
    wf: &Wf<'_>,
    notes: &mut Notes,
) -> Result<(OutputContractSpec, Vec<String>)> {
    let mut defs = Vec::new();
    for r in refs {
        let def = wf.assessments.iter().find(|a| &a.id == r).ok_or_else(|| {
            Failure(format!(
                "{at}.assessmentRefs: `{r}` is not declared in the workflow's `assessments` (WorkRail's compiler rejects it)"
            ))
        })?;
        defs.push(def);
    }
    // Dimension names must be unique across the merged assessments.
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for d in defs.iter().flat_map(|a| &a.dimensions) {
        *count.entry(d.id.as_str()).or_default() += 1;
    }
    let mut dims: BTreeMap<String, DimensionSpec> = BTreeMap::new();
    let mut names: Vec<(String, String, String)> = Vec::new(); // (assessment, dim, worktrain name)
    let mut lines = Vec::new();
    for a in &defs {
        lines.push(format!("Assessment target: \"{}\"", a.id));
        lines.push(format!("Purpose: {}", a.purpose));
        lines.push("Dimensions:".into());
        for d in &a.dimensions {
            let name = if count.get(d.id.as_str()).copied().unwrap_or(0) > 1 {
                let n = key_of(&format!("{}_{}", a.id, d.id));
                notes.add(NoteKind::Mapped, format!("{at}.assessmentRefs"), format!("dimension `{}` appears in several of the step's assessments: `{}`'s is named `{n}`", d.id, a.id));
                n
            } else {
                let n = key_of(&d.id);
                if n != d.id {
                    notes.add(NoteKind::Mapped, format!("{at}.assessmentRefs"), format!("dimension `{}` is named `{n}` (worktrain dimension names are context keys)", d.id));
                }
                n
            };
            if d.required == Some(false) {
                notes.add(NoteKind::Differs, format!("{at}.assessmentRefs"), format!("dimension `{}` is optional in WorkRail; worktrain requires a level for every dimension", d.id));
            }
            if d.levels.is_empty() {
                return Err(Failure(format!(
                    "{at}: assessment `{}` dimension `{}` has no levels",
                    a.id, d.id
                )));
            }
            lines.push(format!(
                "  {name} ({}): {}",
                d.levels.join(" | "),
                d.purpose
            ));
            dims.insert(
                name.clone(),
                DimensionSpec {
                    levels: d.levels.clone(),
                    block_on: Vec::new(),
                    block_guidance: None,
                },
            );
            names.push((a.id.clone(), d.id.clone(), name));
        }
    }
    for (i, c) in s.assessment_consequences.iter().flatten().enumerate() {
        let cat = format!("{at}.assessmentConsequences[{i}]");
        if c.effect.kind != "require_followup" {
            return Err(Failure(format!(
                "{cat}.effect.kind: `{}` is not a WorkRail effect (require_followup)",
                c.effect.kind
            )));
        }
        if let Some(fa) = &c.when.for_assessment
            && !refs.contains(fa)
        {
            return Err(Failure(format!(
                "{cat}.when.forAssessment: `{fa}` is not one of the step's assessmentRefs (WorkRail's compiler rejects it)"
            )));
        }
        let level = &c.when.any_equals_level;
        let mut hit = false;
        for (a, d, name) in &names {
            if c.when.for_assessment.as_ref().is_some_and(|fa| fa != a) {
                continue;
            }
            let Some(spec) = dims.get_mut(name) else {
                continue;
            };
            let _ = d;
            if !spec.levels.contains(level) {
                continue;
            }
            hit = true;
            if !spec.block_on.contains(level) {
                spec.block_on.push(level.clone());
            }
            spec.block_guidance = Some(match spec.block_guidance.take() {
                None => c.effect.guidance.clone(),
                Some(g) if g == c.effect.guidance => g,
                Some(g) => format!("{g}\n\n{}", c.effect.guidance),
            });
        }
        if !hit {
            notes.add(NoteKind::Inconsistent, cat, format!("no dimension of the referenced assessments has the level `{level}`: the consequence can never fire (WorkRail's compiler rejects it)"));
        } else {
            notes.add(NoteKind::Mapped, cat, format!("became `blockOn: [{level}]` with its guidance as `blockGuidance` (the agent must fix and resubmit, as with WorkRail's require_followup)"));
        }
    }
    notes.add(NoteKind::Mapped, format!("{at}.assessmentRefs"), format!("became an `assessment` contract (levels written to `{ASSESSMENT_KEY}.<dimension>`); WorkRail also accepts levels in another letter case, worktrain only as declared"));
    Ok((
        OutputContractSpec {
            contract: ContractName::Assessment,
            required: true,
            dimensions: dims,
            context_key: Some(ASSESSMENT_KEY.into()),
        },
        lines,
    ))
}

/// A value as JSON text, cut at `max` characters.
fn excerpt(v: &Value, max: usize) -> String {
    let text = v.to_string();
    if text.chars().count() <= max {
        text
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// A usable context key from a WorkRail name (letters, digits, `_`, `-`; no dots).
fn key_of(s: &str) -> String {
    let mut k: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    while k.starts_with('_') {
        k.remove(0);
    }
    if k.is_empty() || k == "worktrain" {
        k = format!("dim_{k}");
    }
    k
}

/// A parallel step: the prompt WorkRail shows for it.
fn parallel_step(
    s: &WrStep,
    at: &str,
    scope: &Scope,
    in_loop: Option<&InLoop>,
    notes: &mut Notes,
) -> Result<StepDefinition> {
    note_unused(s, at, notes);
    let id = step_id(&s.id, at)?;
    let title = title_of(s, at)?;
    let delegations = s.parallel_delegations.as_deref().unwrap_or_default();
    if delegations.is_empty() {
        return Err(Failure(format!(
            "{at}: parallel step `{}` has no parallelDelegations",
            s.id
        )));
    }
    if !matches!(s.require_confirmation, None | Some(Value::Bool(false))) {
        notes.add(
            NoteKind::Inconsistent,
            format!("{at}.requireConfirmation"),
            "WorkRail never gates a parallel step; not converted",
        );
    }
    for k in ["prompt", "promptBlocks", "outputContract", "assessmentRefs"] {
        let set = match k {
            "prompt" => s.prompt.is_some(),
            "promptBlocks" => s.prompt_blocks.is_some(),
            "outputContract" => s.output_contract.is_some(),
            _ => s.assessment_refs.is_some(),
        };
        if set {
            notes.add(NoteKind::Inconsistent, format!("{at}.{k}"), "not part of a parallel step (WorkRail shows its generated prompt instead); not converted");
        }
    }
    notes.add(
        NoteKind::Mapped,
        format!("{at}.parallelDelegations"),
        "became the prompt WorkRail shows for a parallel step (start each delegation as its own session, then continue); worktrain's `parallel` cannot express per-delegation conditions and context mappings",
    );
    let header = "# Parallel Subagent Spawning Phase\n\nYou are initiating a parallel execution phase. Please spawn the following subagents simultaneously using your native client-side subagent tools (e.g. `spawn_agent` starting a fresh `start_workflow` session for each).\n\n### Active Delegations";
    let footer = "---\n\n### Procedure\n1. Spawn the active subagents listed above in parallel.\n2. Wait for all subagents to complete their runs and write their findings to disk.\n3. Once completed, confirm all deliverables exist, then call `continue_workflow` to advance to the synthesis phase.";
    let bypass = "All parallel delegations for this step evaluated their conditions to false, meaning no subagents need to be spawned.\n\nPlease immediately call `continue_workflow` to advance to the next step.";
    let mut blocks: Vec<(Cond, String)> = Vec::new();
    for (i, d) in delegations.iter().enumerate() {
        let dat = format!("{at}.parallelDelegations[{i}]");
        if let Some(t) = &d.model_tier {
            notes.add(
                NoteKind::NotConverted,
                format!("{dat}.modelTier"),
                format!("`{t}` is a model recommendation; not converted"),
            );
        }
        if d.allowed_tools.is_some() {
            notes.add(
                NoteKind::NotConverted,
                format!("{dat}.allowedTools"),
                "a tool hint WorkRail does not enforce either; not converted",
            );
        }
        for k in d.extra.keys() {
            notes.add(
                NoteKind::Inconsistent,
                format!("{dat}.{k}"),
                "not a field of WorkRail's parallelDelegation; not converted",
            );
        }
        let when = cond::convert(
            d.run_condition.as_ref(),
            &format!("{dat}.runCondition"),
            scope,
            notes,
        )?;
        // Inputs: context mappings first, then static args (which override a mapping
        // with the same child key in place), as WorkRail builds them.
        let mut inputs: Vec<(String, String)> = Vec::new();
        for (parent, child) in d.context_mapping.iter().flat_map(|m| &m.0) {
            let child = child.as_str().ok_or_else(|| {
                Failure(format!(
                    "{dat}.contextMapping.{parent}: values are child input names (strings)"
                ))
            })?;
            ContextPath::parse(parent)
                .map_err(|e| Failure(format!("{dat}.contextMapping: {e}")))?;
            let var = template(&format!("{{{{{parent}}}}}"), scope, &dat, notes);
            inputs.push((child.to_owned(), var));
        }
        for (k, v) in d.args.iter().flat_map(|m| &m.0) {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            match inputs.iter_mut().find(|(c, _)| c == k) {
                Some(slot) => slot.1 = literal(&v),
                None => inputs.push((k.clone(), literal(&v))),
            }
        }
        if d.context_mapping.as_ref().is_some_and(|m| !m.0.is_empty()) {
            notes.add(NoteKind::Differs, format!("{dat}.contextMapping"), "a mapped context key that is unset is shown as ⟨unset⟩; WorkRail leaves its line out");
        }
        let goal = match &d.goal {
            Some(g) => g.clone(),
            None => match d
                .args
                .as_ref()
                .and_then(|a| a.get("familyName"))
                .and_then(Value::as_str)
            {
                Some(family) => {
                    format!("Run {family} review family for workflow {}", d.workflow_id)
                }
                None => format!("Run {}", d.workflow_id),
            },
        };
        let lines = if inputs.is_empty() {
            "    *   *(No input parameters)*".to_owned()
        } else {
            inputs
                .iter()
                .map(|(k, v)| format!("    *   `{}`: `{v}`", literal(k)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let text = format!(
            "#### Subagent {}: {}\n*   **Workflow ID to Spawn**: `{}`\n*   **Goal**: {}\n*   **Target Input Parameters (Context)**:\n{lines}",
            i + 1,
            literal(&d.workflow_id),
            literal(&d.workflow_id),
            literal(&goal)
        );
        blocks.push((when, text));
    }
    let conditional = blocks.iter().any(|(c, _)| !matches!(c, Cond::Always));
    let mut prompt = header.to_owned();
    let mut fragments = Vec::new();
    if conditional {
        notes.add(
            NoteKind::Differs,
            format!("{at}.parallelDelegations"),
            "delegations are numbered in declaration order (WorkRail numbers the active ones); when none is active, the bypass instruction follows the usual heading (WorkRail shows a shorter 'Bypassed' prompt)",
        );
        let mut any: Vec<Condition> = Vec::new();
        let mut any_always = false;
        for (when, text) in blocks {
            match &when {
                Cond::Always => any_always = true,
                Cond::Never => {}
                Cond::Is(c) => any.push(c.clone()),
            }
            fragments.push(PromptFragment {
                when: when.into_explicit(),
                text,
            });
        }
        let active = if any_always {
            Cond::Always
        } else {
            match any.len() {
                0 => Cond::Never,
                1 => Cond::Is(any.remove(0)),
                _ => Cond::Is(Condition::Or(any)),
            }
        };
        fragments.push(PromptFragment {
            when: active.clone().into_explicit(),
            text: footer.to_owned(),
        });
        if !matches!(active, Cond::Always) {
            fragments.push(PromptFragment {
                when: active.negate().into_explicit(),
                text: bypass.to_owned(),
            });
        }
    } else {
        for (_, text) in &blocks {
            prompt.push_str("\n\n");
            prompt.push_str(text);
        }
        prompt.push_str("\n\n");
        prompt.push_str(footer);
    }
    let mut run = cond::convert(
        s.run_condition.as_ref(),
        &format!("{at}.runCondition"),
        scope,
        notes,
    )?;
    if let Some(l) = in_loop {
        run = l.guard.clone().and(run);
    }
    Ok(StepDefinition {
        id,
        title,
        prompt,
        prompt_fragments: fragments,
        run_condition: run.into_condition(),
        require_confirmation: Confirmation::Never,
        output_contract: None,
        notes_optional: s.notes_optional.unwrap_or(false),
        context_outputs: Vec::new(),
        jump_if: None,
        parallel: None,
    })
}

/// A loop step.
fn loop_entry(
    s: &WrStep,
    at: &str,
    wf: &Wf<'_>,
    by_id: &BTreeMap<&str, &WrStep>,
    referenced_twice: &mut BTreeSet<String>,
    notes: &mut Notes,
) -> Result<LoopDefinition> {
    let id = step_id(&s.id, at)?;
    let cfg = s
        .loop_
        .as_ref()
        .ok_or_else(|| Failure(format!("{at}: loop step `{}` has no `loop`", s.id)))?;
    for (k, v) in &cfg.extra {
        notes.add(
            NoteKind::Inconsistent,
            format!("{at}.loop.{k}"),
            format!("not a field of WorkRail's loop config; not converted: {v}"),
        );
    }
    if !matches!(s.require_confirmation, None | Some(Value::Bool(false))) {
        notes.add(
            NoteKind::Inconsistent,
            format!("{at}.requireConfirmation"),
            "a loop step is never pending in WorkRail, so its gate never applies; not converted",
        );
    }
    if s.notes_optional.is_some() {
        notes.add(
            NoteKind::Inconsistent,
            format!("{at}.notesOptional"),
            "a loop step submits no notes; not converted",
        );
    }
    if s.function_definitions.is_some() {
        notes.add(
            NoteKind::NotConverted,
            format!("{at}.functionDefinitions"),
            "WorkRail shows function definitions only when a session is resumed; not converted",
        );
    }
    for (k, v) in &s.extra {
        let shown = excerpt(v, 60);
        notes.add(
            NoteKind::Inconsistent,
            format!("{at}.{k}"),
            format!("not a field of WorkRail's loop step; not converted: {shown}"),
        );
    }
    let body: Vec<WrStep> = match &s.body {
        None => return Err(Failure(format!("{at}: loop `{}` has no body", s.id))),
        Some(WrBody::Steps(steps)) => steps.clone(),
        Some(WrBody::Ref(r)) => {
            let target = by_id.get(r.as_str()).ok_or_else(|| {
                Failure(format!("{at}.body: the loop body references missing step `{r}` (WorkRail's compiler rejects it)"))
            })?;
            if target.kind.as_deref() == Some("loop") {
                return Err(Failure(format!(
                    "{at}.body: `{r}` is a loop; WorkRail does not support nested loops"
                )));
            }
            let mut step = (*target).clone();
            if !referenced_twice.insert(r.clone()) {
                step.id = format!("{}.{}", s.id, r);
                notes.add(NoteKind::Mapped, format!("{at}.body"), format!("`{r}` is the body of several loops; this copy is `{}` (worktrain step ids are unique)", step.id));
            }
            vec![step]
        }
    };
    if body.is_empty() {
        return Err(Failure(format!(
            "{at}.body: an empty loop body (WorkRail's schema requires at least one step)"
        )));
    }
    let max = match &cfg.max_iterations {
        None => {
            notes.add(NoteKind::Inconsistent, format!("{at}.loop.maxIterations"), "missing (WorkRail's schema requires it; its documented default is 100): the converted loop runs at most 100 passes");
            100
        }
        Some(v) => match v.as_u64() {
            Some(n) if (1..=1000).contains(&n) => n as u32,
            _ => {
                return Err(Failure(format!(
                    "{at}.loop.maxIterations: {v} is not an integer from 1 to 1000"
                )));
            }
        },
    };
    let iteration_var = cfg
        .iteration_var
        .clone()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "currentIteration".into());
    let scope = Scope {
        iteration: Some((
            iteration_var.clone(),
            format!("worktrain.loops.{}.pass", s.id),
        )),
    };
    if cfg.iteration_var.is_some() {
        notes.add(NoteKind::Mapped, format!("{at}.loop.iterationVar"), format!("`{iteration_var}` (1-based) became `worktrain.loops.{}.pass` in the body's prompts and conditions", s.id));
    }
    let loop_controls: Vec<&WrStep> = body
        .iter()
        .filter(|b| {
            b.output_contract
                .as_ref()
                .is_some_and(|c| c.contract_ref == registry::LOOP_CONTROL)
        })
        .collect();
    let kind = cfg.kind.as_deref().ok_or_else(|| {
        Failure(format!(
            "{at}.loop.type is missing (while, until, for or forEach)"
        ))
    })?;
    let mut spec = LoopSpec {
        while_: None,
        until: None,
        for_: None,
        for_each: None,
        max_iterations: max,
        decision_step: None,
    };
    let mut decision: Option<String> = None;
    let mut guard = Cond::Always;
    match kind {
        "while" | "until" => {
            let source_kind = cfg
                .condition_source
                .as_ref()
                .and_then(|c| c.get("kind"))
                .and_then(Value::as_str);
            let artifact = match source_kind {
                Some("artifact_contract") => true,
                Some("context_variable") => false,
                Some(other) => {
                    return Err(Failure(format!(
                        "{at}.loop.conditionSource.kind: `{other}` is not artifact_contract or context_variable"
                    )));
                }
                None => !loop_controls.is_empty(),
            };
            if artifact {
                if cfg.condition.is_some() {
                    notes.add(NoteKind::Inconsistent, format!("{at}.loop.condition"), "ignored by WorkRail: the loop is driven by its `wr.loop_control` artifact; so is the converted loop");
                }
                match loop_controls.last() {
                    Some(d) => {
                        decision = Some(d.id.clone());
                        spec.decision_step = Some(step_id(&d.id, at)?);
                        if body.last().map(|b| &b.id) != Some(&d.id) {
                            notes.add(NoteKind::Differs, format!("{at}.body"), format!("the decision step `{}` is not the last step of the body: after `stop`, WorkRail skips the rest of the pass, worktrain runs it", d.id));
                        }
                        notes.add(NoteKind::Mapped, format!("{at}.loop"), format!("a `{kind}` loop driven by `wr.loop_control` became a decision loop (decisionStep `{}`); a missing artifact continues in both", d.id));
                    }
                    None => {
                        spec.for_ = Some(ForCount::Literal(max));
                        notes.add(NoteKind::Inconsistent, format!("{at}.loop"), format!("the loop is driven by a `wr.loop_control` artifact, but no step of its body produces one: WorkRail runs all {max} passes, and so does the converted loop (`for: {max}`)"));
                    }
                }
            } else {
                let c = match source_kind {
                    Some(_) => cfg
                        .condition_source
                        .as_ref()
                        .and_then(|c| c.get("condition")),
                    None => cfg.condition.as_ref(),
                };
                if c.is_none() {
                    return Err(Failure(format!(
                        "{at}.loop: a `{kind}` loop needs a `condition` (or a conditionSource, or a wr.loop_control step in its body)"
                    )));
                }
                let converted = cond::convert(c, &format!("{at}.loop.condition"), &scope, notes)?;
                let holds = if kind == "until" {
                    converted.negate()
                } else {
                    converted
                };
                spec.while_ = Some(holds.clone().into_explicit());
                if kind == "until" {
                    notes.add(NoteKind::Mapped, format!("{at}.loop"), "WorkRail checks an `until` condition before each pass (the first included): it became `while: {not: …}`");
                }
                if body.len() > 1 {
                    notes.add(NoteKind::Mapped, format!("{at}.loop"), "WorkRail re-checks the loop condition before every step of a pass: the steps after the first carry it in their runCondition");
                }
                guard = holds;
            }
        }
        "for" => match &cfg.count {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n <= 1000 => spec.for_ = Some(ForCount::Literal(n as u32)),
                _ => {
                    return Err(Failure(format!(
                        "{at}.loop.count: {n} is not an integer from 0 to 1000"
                    )));
                }
            },
            Some(Value::String(var)) => {
                let path = ContextPath::parse(var)
                    .map_err(|e| Failure(format!("{at}.loop.count: {e}")))?;
                spec.for_ = Some(ForCount::Var(path));
                notes.add(NoteKind::Differs, format!("{at}.loop.count"), format!("`{var}` is read when the loop starts (WorkRail re-reads it before each pass and fails the session when it is not a number; worktrain runs no pass)"));
            }
            _ => {
                return Err(Failure(format!(
                    "{at}.loop.count: a `for` loop needs a number or a context key"
                )));
            }
        },
        "forEach" => {
            let items = cfg.items.as_deref().ok_or_else(|| {
                Failure(format!("{at}.loop.items: a `forEach` loop needs `items`"))
            })?;
            let over =
                ContextPath::parse(items).map_err(|e| Failure(format!("{at}.loop.items: {e}")))?;
            let item = cfg
                .item_var
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "currentItem".into());
            let index = cfg
                .index_var
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "currentIndex".into());
            spec.for_each = Some(ForEachSpec { over, item, index });
            notes.add(NoteKind::Differs, format!("{at}.loop.items"), format!("when `{items}` is not an array, WorkRail fails the session; worktrain runs no pass"));
        }
        other => {
            return Err(Failure(format!(
                "{at}.loop.type: `{other}` is not while, until, for or forEach"
            )));
        }
    }
    if matches!(kind, "for" | "forEach") && cfg.condition.is_some() {
        notes.add(
            NoteKind::Inconsistent,
            format!("{at}.loop.condition"),
            format!("a `{kind}` loop ignores `condition` in WorkRail; not converted"),
        );
    }
    let run = cond::convert(
        s.run_condition.as_ref(),
        &format!("{at}.runCondition"),
        &Scope::default(),
        notes,
    )?;
    let mut steps = Vec::new();
    for (i, b) in body.iter().enumerate() {
        let bat = match &s.body {
            Some(WrBody::Ref(_)) => format!("{at}.body"),
            _ => format!("{at}.body[{i}]"),
        };
        let in_loop = InLoop {
            decision: decision.clone(),
            guard: if i == 0 { Cond::Always } else { guard.clone() },
        };
        steps.push(match b.kind.as_deref() {
            None => StepEntry::Step(standard_step(b, &bat, wf, &scope, Some(&in_loop), notes)?),
            Some("parallel") => {
                StepEntry::Step(parallel_step(b, &bat, &scope, Some(&in_loop), notes)?)
            }
            Some("loop") => {
                return Err(Failure(format!(
                    "{bat}: WorkRail does not support nested loops"
                )));
            }
            Some(other) => {
                return Err(Failure(format!(
                    "{bat}.type: `{other}` is not a step type allowed in a loop body"
                )));
            }
        });
    }
    Ok(LoopDefinition {
        id,
        title: s.title.clone().filter(|t| !t.trim().is_empty()),
        run_condition: run.into_condition(),
        spec,
        steps,
    })
}
