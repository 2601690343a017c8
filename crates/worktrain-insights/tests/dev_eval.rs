#![allow(clippy::unwrap_used, missing_docs)]
use std::path::PathBuf;
use worktrain_insights::detect::*;
use worktrain_insights::eval::*;
use worktrain_insights::import::*;

#[test]
fn dev_eval() {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpora/agent-trajectories-dev"
    ));
    let files = expand(&[root.join("trajs")]).unwrap();
    let th = Thresholds::default();
    let mut all = Vec::new();
    for f in &files {
        let r = import_file(f, &ImportOptions::default()).unwrap();
        for t in r.traces {
            let fs = detect(&t, &th);
            all.push((t, fs));
        }
    }
    let labels = parse_labels(
        "labels.csv",
        &std::fs::read_to_string(root.join("labels.csv")).unwrap(),
    )
    .unwrap();
    let runs: Vec<_> = all.iter().map(|(t, f)| (t, f.as_slice())).collect();
    let rep = evaluate(&labels, &runs);
    eprintln!("{}", rep.to_text());
    if std::env::var("V").is_ok() {
        for (t, fs) in &all {
            for f in fs {
                eprintln!(
                    "{} {} {:?} {} | {}",
                    t.native_id,
                    f.detector.as_str(),
                    f.severity,
                    f.message,
                    f.pattern
                );
            }
        }
    }
}
