//! Leadership: work that must happen once per store, not once per daemon — cron
//! schedules, pollers, processing persisted webhook deliveries — runs only on the
//! leader. The store elects it ([`worktrain_store::EventStore::try_lead`]: a PostgreSQL
//! advisory lock held by a dedicated connection; the only daemon of an embedded store
//! always leads). Whoever needs to know watches the receiver [`spawn`] returns.
//!
//! If the leader dies its lock goes with its connection; the others try again every
//! `every`, so a new leader takes over within that period. A leader that cannot confirm
//! its lock (lost connection) steps down at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use worktrain_store::EventStore;

/// The role the trigger runtime's periodic work runs under.
pub const TRIGGERS_ROLE: &str = "triggers";

/// Compete for `role` every `every` until `stop`; the receiver says whether this daemon
/// leads right now.
pub fn spawn(
    store: Arc<dyn EventStore>,
    role: &'static str,
    every: Duration,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut lock: Option<Box<dyn worktrain_store::LeaderLock>> = None;
        loop {
            match lock.as_mut() {
                None => match store.try_lead(role).await {
                    Ok(Some(l)) => {
                        info!(role, "leading");
                        lock = Some(l);
                        let _ = tx.send(true);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(role, error = %e, "asking for leadership failed"),
                },
                Some(l) => {
                    if !l.still_held().await {
                        warn!(
                            role,
                            "leadership lost (its connection is gone); stepping down"
                        );
                        lock = None;
                        let _ = tx.send(false);
                        continue;
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        let _ = tx.send(false);
        drop(lock);
    });
    rx
}
