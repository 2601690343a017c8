//! WorkRail's closed sets, as data: the compiler features (`wr.features.*`) and the
//! snippets they and `promptBlocks` may reference (`wr.refs.*`), and the shapes of its
//! artifact contracts (`wr.contracts.*`).
//!
//! WorkRail expands features and snippets into step prompts at compile time, so an
//! imported workflow must carry the same text for its prompts to read the same. The text
//! below is WorkRail's (MIT licence, EtienneBBeaulac/workrail,
//! `src/application/services/compiler/feature-registry.ts` and `ref-registry.ts`).

/// A compiler feature: content appended to the blocks of every step that uses
/// `promptBlocks`, in this order, after the step's own entries.
#[derive(Debug)]
pub struct Feature {
    /// Feature id.
    pub id: &'static str,
    /// Appended to `constraints`.
    pub constraints: &'static [Part],
    /// Appended to `procedure`.
    pub procedure: &'static [Part],
    /// Appended to `verify`.
    pub verify: &'static [Part],
}

/// One injected entry: literal text or a snippet reference.
#[derive(Debug)]
pub enum Part {
    /// Literal text.
    Text(&'static str),
    /// A `wr.refs.*` snippet.
    Ref(&'static str),
}

/// The features WorkRail knows.
pub const FEATURES: &[Feature] = &[
    Feature {
        id: "wr.features.memory_context",
        constraints: &[Part::Ref("wr.refs.memory_usage")],
        procedure: &[],
        verify: &[],
    },
    Feature {
        id: "wr.features.subagent_guidance",
        constraints: &[
            Part::Text(
                "Use the WorkRail Executor as the only subagent model. Do not refer to or rely on named Builder, Researcher, or other identities.",
            ),
            Part::Text(
                "The main agent owns strategy, decisions, synthesis, and final outputs. Subagents provide independent cognitive perspectives only.",
            ),
            Part::Ref("wr.refs.parallelize_cognition_serialize_synthesis"),
        ],
        procedure: &[
            Part::Text(
                "When delegating to WorkRail Executors, provide each with a clear non-overlapping focus and the shared fact packet or context as primary truth.",
            ),
            Part::Text(
                "After receiving parallel subagent outputs, synthesize them yourself — do not let any single subagent output become the canonical answer without main-agent review.",
            ),
        ],
        verify: &[
            Part::Text(
                "All delegated outputs were synthesized by the main agent, not adopted verbatim.",
            ),
            Part::Text(
                "No subagent was given final decision authority over canonical findings, recommendations, or artifacts.",
            ),
        ],
    },
];

/// The feature with this id.
pub fn feature(id: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.id == id)
}

/// The snippets WorkRail knows, by id.
pub const REFS: &[(&str, &str)] = &[
    (
        "wr.refs.memory_usage",
        "If Memory MCP tools are available (memory_briefing, memory_store, memory_query):\n\
         - Query Memory for relevant prior knowledge about this workspace before beginning work\n\
         - After completing significant work, store key discoveries and decisions\n\
         - Use descriptive topics and titles so future sessions can find them\n\
         - Do not block on Memory failures — it is advisory, not load-bearing",
    ),
    (
        "wr.refs.memory_store",
        "If Memory MCP tools are available (memory_store):\n\
         - Store the key findings from this phase with a descriptive topic and title\n\
         - Include file paths, decisions made, and rationale\n\
         - Do not block on Memory failures — continue regardless",
    ),
    (
        "wr.refs.memory_query",
        "If Memory MCP tools are available (memory_briefing, memory_query):\n\
         - Check Memory for prior context relevant to this task\n\
         - Use workspace-scoped queries to find related past work\n\
         - Do not block on Memory failures — proceed without prior context if unavailable",
    ),
    (
        "wr.refs.notes_first_durability",
        "Durability rules (notes-first):\n\
         - Use output.notesMarkdown as the primary durable record for every step\n\
         - Keep execution truth in notes and explicit context variables, not in markdown sidecar files\n\
         - Human-facing artifacts (review docs, plans) are for readability only — they are NOT required workflow memory\n\
         - If a chat rewind occurs, the durable notes and context variables survive; sidecar files may not\n\
         - Always record key decisions, findings, and rationale in notesMarkdown before advancing",
    ),
    (
        "wr.refs.synthesis_under_disagreement",
        "Synthesis rules when parallel outputs disagree:\n\
         - Treat disagreement as first-class work — never handwave contradictory outputs\n\
         - If 2+ parallel outputs flag the same issue at the same severity, treat it as validated\n\
         - If the same issue is flagged at different severities, default to the higher severity unless the lower-severity position includes specific counter-evidence\n\
         - If one output flags an issue and others are silent, investigate it but do not automatically block unless it is clearly critical\n\
         - If one output says false positive and another says valid issue, require explicit main-agent adjudication in notes before finalization\n\
         - If outputs show material disagreement, findings override any preliminary recommendation until the disagreement is reconciled\n\
         - Document every resolved contradiction with its resolution rationale",
    ),
    (
        "wr.refs.parallelize_cognition_serialize_synthesis",
        "Parallelism rules:\n\
         - Parallelize independent cognition: context gathering, hypothesis generation, audit routines, and reviewer families can run simultaneously\n\
         - Serialize synthesis: merging parallel outputs, resolving contradictions, making canonical decisions, and writing final artifacts must happen sequentially by the main agent\n\
         - Never let a parallel subagent finalize or commit to a canonical answer — the main agent owns synthesis and final decisions\n\
         - Prefer one compact targeted bundle over multiple small sequential delegation moments\n\
         - When spawning parallel executors, give each a clear, non-overlapping focus area",
    ),
    (
        "wr.refs.adversarial_challenge_rules",
        "Adversarial challenge rules:\n\
         - Actively try to break the current leading position — do not just look for confirming evidence\n\
         - For each finding or conclusion, ask: what evidence would disprove this? Is that evidence missing or present?\n\
         - If the challenge cannot materially weaken the position, the position is strengthened\n\
         - If the challenge reveals a genuine weakness, it must be recorded as a finding and the position must be updated\n\
         - Do not soften findings to avoid conflict — severity should reflect actual risk, not social comfort\n\
         - Challenge severity inflation as well as severity deflation — false positives waste as much attention as false negatives\n\
         - If 2+ independent challengers raise the same serious concern, treat it as blocking by default",
    ),
];

/// The text of a snippet.
pub fn snippet(id: &str) -> Option<&'static str> {
    REFS.iter().find(|(k, _)| *k == id).map(|(_, v)| *v)
}

/// The loop-control contract: the only WorkRail contract with a worktrain equivalent of
/// the same shape (`loop_control`).
pub const LOOP_CONTROL: &str = "wr.contracts.loop_control";

/// The assessment contract (assessments are usually declared with `assessmentRefs`).
pub const ASSESSMENT: &str = "wr.contracts.assessment";

/// What an artifact of a WorkRail contract must hold, for contracts worktrain has no
/// equivalent of: the importer writes this into the step's prompt, because WorkRail shows
/// it to the agent but worktrain cannot check it.
pub fn contract_fields(contract_ref: &str) -> Option<&'static [&'static str]> {
    Some(match contract_ref {
        "wr.contracts.review_verdict" => &[
            "verdict: clean | minor | blocking",
            "confidence: high | medium | low",
            "findings: array of {severity: critical | major | minor | nit, summary (non-empty), findingCategory?: correctness | security | architecture | ux | performance | testing | style}; [] for a clean review (extra fields such as file, startLine, endLine, causalLink, remediation are kept)",
            "summary: non-empty string",
        ],
        "wr.contracts.coding_handoff" => &[
            "version: 1",
            "keyDecisions: up to 8 strings",
            "knownLimitations: up to 6 strings",
            "testsAdded: up to 10 strings",
            "filesChanged: up to 20 strings",
            "branchName (optional): string",
            "correctedAssumptions (optional, only when correcting an earlier session): up to 6 of {assumed, actual}",
        ],
        "wr.contracts.shaping_handoff" => &[
            "version: 1",
            "pitchPath: string",
            "selectedShape: one sentence",
            "appetite: string",
            "keyConstraints: up to 8 strings",
            "rabbitHoles: up to 6 strings",
            "outOfScope: up to 6 strings",
            "validationChecklist: up to 10 strings",
        ],
        "wr.contracts.discovery_handoff" => &[
            "version: 1",
            "selectedDirection: non-empty string",
            "designDocPath: string (may be empty)",
            "confidenceBand: high | medium | low",
            "keyInvariants: up to 12 strings",
            "rejectedDirections (optional): up to 5 of {direction, reason}",
            "implementationConstraints (optional): up to 8 strings",
            "keyCodebaseLocations (optional): up to 10 of {path, relevance}",
        ],
        "wr.contracts.gate_verdict" => &[
            "version: 1",
            "verdict: approved | rejected | uncertain",
            "confidence: high | medium | low",
            "rationale: at least 20 characters",
        ],
        "wr.contracts.coordinator_signal" => &[
            "signalKind: progress | finding | data_needed | approval_needed | blocked",
            "payload: object",
        ],
        _ => return None,
    })
}

/// The artifact `kind` of a contract reference (`wr.contracts.x` → `wr.x`).
pub fn contract_kind(contract_ref: &str) -> String {
    match contract_ref.strip_prefix("wr.contracts.") {
        Some(name) => format!("wr.{name}"),
        None => contract_ref.to_owned(),
    }
}
