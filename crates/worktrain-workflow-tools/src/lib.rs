//! Tools that read compiled workflows without running them: the graph renderer (text,
//! DOT and SVG), the linter, and the simulator that walks every routing with the real
//! state machine.
//!
//! These sit above `worktrain-core` so that the core stays the pure domain the engine
//! runs on; the CLI (`workflow graph|lint|simulate`) and the console use them.
//!
//! ```
//! use worktrain_core::compile::compile;
//! use worktrain_core::load::parse_workflow;
//! use worktrain_workflow_tools::graph::{GraphFormat, render};
//! use worktrain_workflow_tools::simulate::{Script, simulate};
//!
//! let yaml = "schemaVersion: 2\nid: hello\nname: Hello\ndescription: d\nversion: \"1\"\n\
//!             steps:\n  - id: greet\n    title: Greet\n    prompt: Say hello.\n";
//! let pinned = compile(&parse_workflow("hello.yaml", yaml)?)?;
//! assert!(render(&pinned.workflow, GraphFormat::Text).contains("greet"));
//! let trace = simulate(&pinned, &Script::default()).map_err(|e| e.to_string())?;
//! assert!(!trace.path.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod graph;
pub mod lint;
pub mod simulate;
