//! `worktrain admin migrate-store`: copy a store into another (typically the embedded
//! SQLite store into PostgreSQL), verifying every copied session's hash chain.

use serde::Serialize;
use worktrain_core::error::ApiError;
use worktrain_core::ids::{Seq, SessionId, Sha256Hash};
use worktrain_engine::store_error;
use worktrain_store::{EventStore, StoreError, StoreUrl};

use crate::Ctx;
use crate::cli::MigrateStoreArgs;
use crate::output::Exit;

/// Sessions and blobs read per page.
const PAGE: u32 = 500;

/// What a migration did.
#[derive(Debug, Default, Serialize)]
struct MigrateReport {
    from: String,
    to: String,
    blobs_copied: u64,
    sessions_copied: u64,
    sessions_skipped: u64,
    events_copied: u64,
    sessions_verified: u64,
    /// Trace analysis (`worktrain insights`): traces, proposals with their history, notes.
    insights: worktrain_store::insights::InsightsCopy,
}

pub(crate) async fn migrate_store(ctx: &Ctx, args: MigrateStoreArgs) -> Result<Exit, ApiError> {
    let config = ctx.config()?;
    let from_url = ctx
        .home
        .store_url(&config, ctx.database_url.as_deref())
        .map_err(store_error)?;
    let to_url = StoreUrl::parse(&args.to)
        .map_err(store_error)?
        .relative_to(ctx.home.root());
    if from_url == to_url {
        return Err(ApiError::invalid_input(
            format!("--to names the store being copied ({from_url})"),
            "pass the URL of the new store",
        ));
    }
    let options = ctx.home.store_options(&config);
    let from = ctx.open_store(&config).await?;
    let to = worktrain_store::open(&to_url, &options)
        .await
        .map_err(store_error)?;
    let mut report = MigrateReport {
        from: from_url.redacted(),
        to: to_url.redacted(),
        ..MigrateReport::default()
    };
    copy(from.as_ref(), to.as_ref(), &mut report, ctx.out.json)
        .await
        .map_err(store_error)?;
    if let (Some(a), Some(b)) = (from.insights(), to.insights()) {
        report.insights = worktrain_store::insights::copy_all(a, b)
            .await
            .map_err(store_error)?;
    }
    from.close().await;
    to.close().await;
    if ctx.out.json {
        ctx.out.json(&report);
    } else {
        say!(
            "Copied {} sessions ({} events) and {} blobs from {} to {}; {} already there were skipped. Every copied session's hash chain verifies in the target ({} checked).",
            report.sessions_copied,
            report.events_copied,
            report.blobs_copied,
            report.from,
            report.to,
            report.sessions_skipped,
            report.sessions_verified
        );
        say!(
            "Trace analysis: {} traces, {} proposals (with their history) and {} notes copied.",
            report.insights.traces,
            report.insights.proposals,
            report.insights.notes
        );
        say!(
            "Point worktrain at the new store with `store.url: {}` in config.yaml (or WORKTRAIN_DATABASE_URL).",
            report.to
        );
    }
    Ok(Exit::Ok)
}

async fn copy(
    from: &dyn EventStore,
    to: &dyn EventStore,
    report: &mut MigrateReport,
    quiet: bool,
) -> Result<(), StoreError> {
    // Blobs first: events reference them (compiled workflows, responses, artifacts).
    let mut after: Option<Sha256Hash> = None;
    loop {
        let hashes = from.blob_hashes(after, PAGE).await?;
        let Some(last) = hashes.last().copied() else {
            break;
        };
        for h in hashes {
            let bytes = from
                .blob(h)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("blob {h} vanished while copying")))?;
            to.put_blob(&bytes).await?;
            report.blobs_copied += 1;
        }
        after = Some(last);
    }
    let mut after: Option<SessionId> = None;
    loop {
        let ids = from.session_ids(after, PAGE).await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        for id in ids {
            if to.session(id).await?.is_some() {
                // Already copied by an earlier, interrupted run: verified below all the same.
                report.sessions_skipped += 1;
            } else {
                let mut events = Vec::new();
                let mut seq = Seq(0);
                loop {
                    let page = from.raw_events(id, seq, 1000).await?;
                    let Some(e) = page.last() else { break };
                    seq = e.seq;
                    events.extend(page);
                }
                let n = events.len() as u64;
                to.import_session(events).await?;
                report.sessions_copied += 1;
                report.events_copied += n;
            }
            let verified = to.verify(id).await?;
            match verified {
                Some(r) if r.is_valid() => report.sessions_verified += 1,
                Some(r) => {
                    let why = r
                        .first_broken
                        .map(|b| format!("seq {}: {}", b.seq, b.reason))
                        .unwrap_or_default();
                    return Err(StoreError::Corrupt(format!(
                        "session {id} does not verify in the target after the copy ({why})"
                    )));
                }
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "session {id} has no events in the target after the copy"
                    )));
                }
            }
        }
        if !quiet {
            eprintln!(
                "  … {} sessions copied, {} skipped",
                report.sessions_copied, report.sessions_skipped
            );
        }
        after = Some(last);
    }
    Ok(())
}
