//! The daemon's side of notifications: when a run ends completed, failed, parked at a
//! gate, or failed its delivery, the notifiers of `triggers.yml` that want that moment
//! are told — in a task of its own, after the run's end is recorded, so a slow or dead
//! receiver never delays or fails a session. Each result is a `notification_sent` /
//! `notification_failed` event on the session (by notifier name, never the URL).
//!
//! Notifiers are read from the triggers file in force when the run ends (not a snapshot
//! taken at dispatch): a rotated webhook URL applies at once, and no URL or secret is
//! ever copied into a session's events.

use worktrain_core::ids::SessionId;
use worktrain_core::projection::SessionSummary;
use worktrain_core::run::{FailureReason, NotifyEvent, RunEnd, TriggerKind};
use worktrain_delivery::notify::{Notice, Target};

use crate::supervisor::Supervisor;

/// The notifiers configured for a moment of a session.
pub trait NotifierSource: Send + Sync {
    /// The notifiers told about `event` of a session started by the configured trigger
    /// `trigger` (`None`: not started by a configured trigger).
    fn targets(&self, trigger: Option<&str>, event: NotifyEvent) -> Vec<Target>;
}

impl NotifierSource for worktrain_triggers::runtime::Runtime {
    fn targets(&self, trigger: Option<&str>, event: NotifyEvent) -> Vec<Target> {
        self.index()
            .notifiers_for(trigger, event)
            .into_iter()
            .map(|(name, def)| Target {
                name: name.to_owned(),
                kind: def.kind,
                url: def.url.value().to_owned(),
                secret: def.secret.as_ref().map(|s| s.value().to_owned()),
                max_per_minute: def.max_per_minute,
            })
            .collect()
    }
}

/// The moment a run's end is, for notifiers (`None`: nobody is told, e.g. a cancel).
pub fn event_of(end: RunEnd, reason: Option<FailureReason>) -> Option<NotifyEvent> {
    match end {
        RunEnd::Completed => Some(NotifyEvent::Completed),
        RunEnd::Parked => Some(NotifyEvent::WaitingForApproval),
        RunEnd::Failed => match reason {
            Some(FailureReason::DeliveryFailed) => Some(NotifyEvent::DeliveryFailed),
            // The operator's kill switch stopped it: they know (and a kill switch over
            // many sessions would otherwise be a burst of messages).
            Some(FailureReason::Killed) => None,
            _ => Some(NotifyEvent::Failed),
        },
        // The operator cancelled it: they know.
        RunEnd::Cancelled => None,
    }
}

/// The configured trigger that started a session, if one did (spawns and the console
/// carry a caller's label, which names no trigger).
fn trigger_of(summary: &SessionSummary) -> Option<String> {
    let t = &summary.run.as_ref()?.trigger;
    match t.kind {
        TriggerKind::Webhook | TriggerKind::Poll | TriggerKind::Cron => t.id.clone(),
        TriggerKind::Api | TriggerKind::Parent | TriggerKind::Console => None,
    }
}

/// Tell the notifiers that want it about `event` of session `id`, in the background;
/// every result is recorded on the session. Returns at once.
pub fn spawn(
    sup: &Supervisor,
    id: SessionId,
    event: NotifyEvent,
    reason: Option<FailureReason>,
    detail: Option<String>,
) {
    let Some(source) = sup.notifiers() else {
        return;
    };
    let engine = sup.engine().clone();
    let limiter = sup.notify_limiter();
    let console_url = sup.console_url(id);
    tokio::spawn(async move {
        let summary = match engine.session(id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(session_id = %id, error = %e.message, "notifications skipped: the session could not be read");
                return;
            }
        };
        let targets = source.targets(trigger_of(&summary).as_deref(), event);
        if targets.is_empty() {
            return;
        }
        let run = summary.run.as_ref();
        let notice = Notice {
            event,
            session: id,
            workflow: summary.workflow_id.to_string(),
            goal: summary.goal.clone(),
            source: run
                .and_then(|r| r.trigger.source.as_ref())
                .map(ToString::to_string),
            reason: reason.map(|r| r.as_str().to_owned()),
            detail,
            step: match event {
                NotifyEvent::WaitingForApproval => {
                    summary.current.as_ref().map(|c| c.step_id.to_string())
                }
                NotifyEvent::Completed | NotifyEvent::Failed | NotifyEvent::DeliveryFailed => None,
            },
            pr_url: run
                .and_then(|r| r.delivery.as_ref())
                .and_then(|d| d.pr_url.clone()),
            console_url,
        };
        // One task per notifier: a slow receiver does not hold up the others.
        let mut set = tokio::task::JoinSet::new();
        for target in targets {
            let engine = engine.clone();
            let limiter = limiter.clone();
            let notice = notice.clone();
            set.spawn(async move {
                let result = worktrain_delivery::notify::notify(
                    &target,
                    &notice,
                    &limiter,
                    &worktrain_delivery::RetryPolicy::default(),
                )
                .await;
                let body = result.event(&target.name, notice.event);
                if let Err(e) = engine.transition(id, |_| Ok(vec![body.clone()])).await {
                    tracing::warn!(session_id = %id, notifier = %target.name, error = %e.message, "recording a notification's result failed");
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_end_is_one_moment_or_none() {
        use FailureReason as F;
        assert_eq!(
            event_of(RunEnd::Completed, None),
            Some(NotifyEvent::Completed)
        );
        assert_eq!(
            event_of(RunEnd::Parked, None),
            Some(NotifyEvent::WaitingForApproval)
        );
        assert_eq!(
            event_of(RunEnd::Failed, Some(F::DeliveryFailed)),
            Some(NotifyEvent::DeliveryFailed),
            "a failed delivery is its own moment, not also `failed`"
        );
        for r in [
            F::AgentStoppedEarly,
            F::TooManyInterruptions,
            F::WallClockExceeded,
        ] {
            assert_eq!(event_of(RunEnd::Failed, Some(r)), Some(NotifyEvent::Failed));
        }
        assert_eq!(event_of(RunEnd::Failed, Some(F::Killed)), None);
        assert_eq!(event_of(RunEnd::Cancelled, None), None);
    }
}
