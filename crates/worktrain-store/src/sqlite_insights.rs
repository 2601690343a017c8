//! [`InsightsStore`] on SQLite (schema in `migrations/sqlite/0004_insights.sql`). Plain
//! SQL only: no JSON functions, every list has an explicit `ORDER BY` on columns.

use crate::common::to_u64;
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::StoreError;
use crate::insights::{
    FindingFilter, FindingGroup, FindingRow, FindingsUpdate, GroupFilter, InsightsStore, NoteRow,
    ProposalChange, ProposalFilter, ProposalRow, PutOutcome, StepOutcomes, TraceBody, TraceFilter,
    TraceHead, TraceRow,
};
use crate::sqlite::SqliteStore;

fn limit(l: Option<u32>) -> i64 {
    i64::from(l.unwrap_or(100).clamp(1, 10_000))
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn trace_where(q: &mut QueryBuilder<Sqlite>, f: &TraceFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(s) = &f.source {
        q.push(" AND source = ").push_bind(s.clone());
    }
    if let Some(w) = &f.workflow_id {
        q.push(" AND workflow_id = ").push_bind(w.clone());
    }
    if let Some(since) = f.since_ms {
        q.push(" AND started_at_ms >= ").push_bind(since);
    }
    q.push(" ORDER BY started_at_ms, trace_id LIMIT ")
        .push_bind(limit(f.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(f.offset.unwrap_or(0)));
}

fn row_to_finding(r: &SqliteRow) -> Result<FindingRow, StoreError> {
    Ok(FindingRow {
        trace_id: r.try_get("trace_id")?,
        ordinal: to_u32(r.try_get("ordinal")?),
        detector: r.try_get("detector")?,
        severity: r.try_get("severity")?,
        fingerprint: r.try_get("fingerprint")?,
        workflow_id: r.try_get("workflow_id")?,
        step_id: r.try_get("step_id")?,
        outcome: r.try_get("outcome")?,
        body: r.try_get("body")?,
    })
}

fn row_to_proposal(r: &SqliteRow) -> Result<ProposalRow, StoreError> {
    Ok(ProposalRow {
        proposal_id: r.try_get("proposal_id")?,
        workflow_id: r.try_get("workflow_id")?,
        step_id: r.try_get("step_id")?,
        fingerprint: r.try_get("fingerprint")?,
        detector: r.try_get("detector")?,
        status: r.try_get("status")?,
        confidence: r.try_get("confidence")?,
        sessions: to_u64(r.try_get("sessions")?),
        body: r.try_get("body")?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

macro_rules! trace_columns {
    () => {
        "trace_id, source, native_id, workflow_id, trigger_label, outcome, \
         started_at_ms, ended_at_ms, version, digest, summary, trace, imported_at_ms"
    };
}

impl SqliteStore {
    async fn load_trace_rows(&self, heads: Vec<SqliteRow>) -> Result<Vec<TraceRow>, StoreError> {
        let mut out = Vec::with_capacity(heads.len());
        for r in heads {
            let trace_id: String = r.try_get("trace_id")?;
            let findings = self
                .findings(&FindingFilter {
                    trace_id: Some(trace_id.clone()),
                    limit: Some(10_000),
                    ..FindingFilter::default()
                })
                .await?;
            let steps: Vec<(String,)> = sqlx::query_as(
                "SELECT step_id FROM insight_trace_steps WHERE trace_id = ? ORDER BY step_id",
            )
            .bind(&trace_id)
            .fetch_all(&self.pool)
            .await?;
            out.push(TraceRow {
                trace_id,
                source: r.try_get("source")?,
                native_id: r.try_get("native_id")?,
                workflow_id: r.try_get("workflow_id")?,
                trigger: r.try_get("trigger_label")?,
                outcome: r.try_get("outcome")?,
                started_at_ms: r.try_get("started_at_ms")?,
                ended_at_ms: r.try_get("ended_at_ms")?,
                version: r.try_get("version")?,
                digest: r.try_get("digest")?,
                summary: r.try_get("summary")?,
                trace: r.try_get("trace")?,
                steps: steps.into_iter().map(|(s,)| s).collect(),
                findings,
                imported_at_ms: r.try_get("imported_at_ms")?,
            });
        }
        Ok(out)
    }
}

async fn put_one(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    row: &TraceRow,
) -> Result<PutOutcome, StoreError> {
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT digest FROM insight_traces WHERE trace_id = ?")
            .bind(&row.trace_id)
            .fetch_optional(&mut **tx)
            .await?;
    let outcome = match &existing {
        Some((d,)) if *d == row.digest => {
            // Same content; only the source version may have moved (events that do
            // not change the trace, such as a heartbeat-only run).
            sqlx::query("UPDATE insight_traces SET version = ? WHERE trace_id = ?")
                .bind(row.version)
                .bind(&row.trace_id)
                .execute(&mut **tx)
                .await?;
            return Ok(PutOutcome::Unchanged);
        }
        Some(_) => PutOutcome::Updated,
        None => PutOutcome::Inserted,
    };
    sqlx::query(
        "INSERT INTO insight_traces (trace_id, source, native_id, workflow_id, trigger_label,
             outcome, started_at_ms, ended_at_ms, version, digest, summary, trace, imported_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (trace_id) DO UPDATE SET
             source = excluded.source, native_id = excluded.native_id,
             workflow_id = excluded.workflow_id, trigger_label = excluded.trigger_label,
             outcome = excluded.outcome, started_at_ms = excluded.started_at_ms,
             ended_at_ms = excluded.ended_at_ms, version = excluded.version,
             digest = excluded.digest, summary = excluded.summary, trace = excluded.trace,
             imported_at_ms = excluded.imported_at_ms",
    )
    .bind(&row.trace_id)
    .bind(&row.source)
    .bind(&row.native_id)
    .bind(row.workflow_id.as_deref())
    .bind(row.trigger.as_deref())
    .bind(&row.outcome)
    .bind(row.started_at_ms)
    .bind(row.ended_at_ms)
    .bind(row.version)
    .bind(&row.digest)
    .bind(&row.summary)
    .bind(&row.trace)
    .bind(row.imported_at_ms)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM insight_findings WHERE trace_id = ?")
        .bind(&row.trace_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM insight_trace_steps WHERE trace_id = ?")
        .bind(&row.trace_id)
        .execute(&mut **tx)
        .await?;
    for chunk in row.findings.chunks(200) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO insight_findings (trace_id, ordinal, detector, severity, fingerprint,
                 workflow_id, step_id, outcome, body) ",
        );
        q.push_values(chunk, |mut b, f| {
            b.push_bind(&row.trace_id)
                .push_bind(i64::from(f.ordinal))
                .push_bind(&f.detector)
                .push_bind(&f.severity)
                .push_bind(&f.fingerprint)
                .push_bind(row.workflow_id.as_deref())
                .push_bind(f.step_id.as_deref())
                .push_bind(&row.outcome)
                .push_bind(&f.body);
        });
        q.build().execute(&mut **tx).await?;
    }
    let mut steps: Vec<&String> = row.steps.iter().collect();
    steps.sort();
    steps.dedup();
    for chunk in steps.chunks(200) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO insight_trace_steps (trace_id, step_id, outcome, workflow_id) ",
        );
        q.push_values(chunk, |mut b, s| {
            b.push_bind(&row.trace_id)
                .push_bind(s.as_str())
                .push_bind(&row.outcome)
                .push_bind(row.workflow_id.as_deref());
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(outcome)
}

#[async_trait]
impl InsightsStore for SqliteStore {
    async fn put_traces(&self, rows: &[TraceRow]) -> Result<Vec<PutOutcome>, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in rows {
            outcomes.push(put_one(&mut tx, row).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn trace_version(&self, trace_id: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT version, digest FROM insight_traces WHERE trace_id = ?")
                .bind(trace_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn trace(&self, trace_id: &str) -> Result<Option<TraceRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trace_columns!(),
            " FROM insight_traces WHERE trace_id = ?"
        ))
        .bind(trace_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.load_trace_rows(rows).await?.into_iter().next())
    }

    async fn traces(&self, filter: &TraceFilter) -> Result<Vec<TraceHead>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT trace_id, source, native_id, workflow_id, trigger_label, outcome,
                 started_at_ms, ended_at_ms, version, summary,
                 (SELECT COUNT(*) FROM insight_findings f WHERE f.trace_id = t.trace_id) AS findings
             FROM insight_traces t",
        );
        trace_where(&mut q, filter);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(TraceHead {
                    trace_id: r.try_get("trace_id")?,
                    source: r.try_get("source")?,
                    native_id: r.try_get("native_id")?,
                    workflow_id: r.try_get("workflow_id")?,
                    trigger: r.try_get("trigger_label")?,
                    outcome: r.try_get("outcome")?,
                    started_at_ms: r.try_get("started_at_ms")?,
                    ended_at_ms: r.try_get("ended_at_ms")?,
                    version: r.try_get("version")?,
                    summary: r.try_get("summary")?,
                    findings: to_u64(r.try_get("findings")?),
                })
            })
            .collect()
    }

    async fn trace_rows(&self, filter: &TraceFilter) -> Result<Vec<TraceRow>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            trace_columns!(),
            " FROM insight_traces"
        ));
        trace_where(&mut q, filter);
        let rows = q.build().fetch_all(&self.pool).await?;
        self.load_trace_rows(rows).await
    }

    async fn trace_bodies(&self, filter: &TraceFilter) -> Result<Vec<TraceBody>, StoreError> {
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT trace_id, version, trace FROM insight_traces");
        trace_where(&mut q, filter);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(TraceBody {
                    trace_id: r.try_get("trace_id")?,
                    version: r.try_get("version")?,
                    trace: r.try_get("trace")?,
                })
            })
            .collect()
    }

    async fn replace_findings(&self, updates: &[FindingsUpdate]) -> Result<Vec<bool>, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            let row: Option<(String, Option<String>, String)> = sqlx::query_as(
                "SELECT digest, workflow_id, outcome FROM insight_traces WHERE trace_id = ?",
            )
            .bind(&u.trace_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((digest, workflow, outcome)) = row else {
                out.push(false);
                continue;
            };
            if digest == u.digest {
                out.push(false);
                continue;
            }
            sqlx::query("UPDATE insight_traces SET digest = ? WHERE trace_id = ?")
                .bind(&u.digest)
                .bind(&u.trace_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM insight_findings WHERE trace_id = ?")
                .bind(&u.trace_id)
                .execute(&mut *tx)
                .await?;
            for chunk in u.findings.chunks(200) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO insight_findings (trace_id, ordinal, detector, severity, fingerprint,
                         workflow_id, step_id, outcome, body) ",
                );
                q.push_values(chunk, |mut b, f| {
                    b.push_bind(&u.trace_id)
                        .push_bind(i64::from(f.ordinal))
                        .push_bind(&f.detector)
                        .push_bind(&f.severity)
                        .push_bind(&f.fingerprint)
                        .push_bind(workflow.as_deref())
                        .push_bind(f.step_id.as_deref())
                        .push_bind(&outcome)
                        .push_bind(&f.body);
                });
                q.build().execute(&mut *tx).await?;
            }
            out.push(true);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn findings(&self, f: &FindingFilter) -> Result<Vec<FindingRow>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT trace_id, ordinal, detector, severity, fingerprint, workflow_id, step_id,
                 outcome, body FROM insight_findings WHERE 1 = 1",
        );
        if let Some(v) = &f.trace_id {
            q.push(" AND trace_id = ").push_bind(v.clone());
        }
        if let Some(v) = &f.workflow_id {
            q.push(" AND workflow_id = ").push_bind(v.clone());
        }
        if let Some(v) = &f.step_id {
            q.push(" AND step_id = ").push_bind(v.clone());
        }
        if let Some(v) = &f.detector {
            q.push(" AND detector = ").push_bind(v.clone());
        }
        if let Some(v) = &f.fingerprint {
            q.push(" AND fingerprint = ").push_bind(v.clone());
        }
        q.push(" ORDER BY trace_id, ordinal LIMIT ")
            .push_bind(limit(f.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(f.offset.unwrap_or(0)));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(row_to_finding).collect()
    }

    async fn finding_groups(&self, f: &GroupFilter) -> Result<Vec<FindingGroup>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT workflow_id, step_id, fingerprint, MIN(detector) AS detector,
                 COUNT(DISTINCT trace_id) AS sessions,
                 COUNT(DISTINCT CASE WHEN outcome IN ('PARTIAL', 'BLOCKED', 'FAILED') THEN trace_id END) AS failing,
                 COUNT(DISTINCT CASE WHEN outcome <> 'UNKNOWN' THEN trace_id END) AS known
             FROM insight_findings
             WHERE workflow_id IS NOT NULL AND step_id IS NOT NULL",
        );
        if let Some(w) = &f.workflow_id {
            q.push(" AND workflow_id = ").push_bind(w.clone());
        }
        if let Some(st) = &f.step_id {
            q.push(" AND step_id = ").push_bind(st.clone());
        }
        q.push(" GROUP BY workflow_id, step_id, fingerprint HAVING COUNT(DISTINCT trace_id) >= ")
            .push_bind(i64::try_from(f.min_sessions.max(1)).unwrap_or(i64::MAX))
            .push(" ORDER BY sessions DESC, workflow_id, step_id, fingerprint LIMIT ")
            .push_bind(i64::from(f.limit.unwrap_or(1000).clamp(1, 100_000)));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(FindingGroup {
                    workflow_id: r.try_get("workflow_id")?,
                    step_id: r.try_get("step_id")?,
                    fingerprint: r.try_get("fingerprint")?,
                    detector: r.try_get("detector")?,
                    sessions: to_u64(r.try_get("sessions")?),
                    failing: to_u64(r.try_get("failing")?),
                    known: to_u64(r.try_get("known")?),
                })
            })
            .collect()
    }

    async fn step_outcomes(
        &self,
        workflow_id: &str,
        step_id: &str,
    ) -> Result<StepOutcomes, StoreError> {
        let sql = "SELECT COUNT(*) AS sessions,
                 COALESCE(SUM(CASE WHEN outcome IN ('PARTIAL', 'BLOCKED', 'FAILED') THEN 1 ELSE 0 END), 0) AS failing,
                 COALESCE(SUM(CASE WHEN outcome <> 'UNKNOWN' THEN 1 ELSE 0 END), 0) AS known
             FROM insight_trace_steps WHERE workflow_id = ? AND step_id = ?";
        let r = sqlx::query(sql)
            .bind(workflow_id)
            .bind(step_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(StepOutcomes {
            sessions: to_u64(r.try_get("sessions")?),
            failing: to_u64(r.try_get("failing")?),
            known: to_u64(r.try_get("known")?),
        })
    }

    async fn upsert_proposal(&self, row: &ProposalRow) -> Result<bool, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
        let exists: Option<(String,)> =
            sqlx::query_as("SELECT status FROM insight_proposals WHERE proposal_id = ?")
                .bind(&row.proposal_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            sqlx::query(
                "UPDATE insight_proposals SET confidence = ?, sessions = ?, body = ?,
                     detector = ?, updated_at_ms = ? WHERE proposal_id = ?",
            )
            .bind(row.confidence)
            .bind(i64::try_from(row.sessions).unwrap_or(i64::MAX))
            .bind(&row.body)
            .bind(&row.detector)
            .bind(row.updated_at_ms)
            .bind(&row.proposal_id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO insight_proposals (proposal_id, workflow_id, step_id, fingerprint,
                     detector, status, confidence, sessions, body, created_at_ms, updated_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&row.proposal_id)
            .bind(&row.workflow_id)
            .bind(&row.step_id)
            .bind(&row.fingerprint)
            .bind(&row.detector)
            .bind(&row.status)
            .bind(row.confidence)
            .bind(i64::try_from(row.sessions).unwrap_or(i64::MAX))
            .bind(&row.body)
            .bind(row.created_at_ms)
            .bind(row.updated_at_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO insight_proposal_history (proposal_id, ordinal, status, note, at_ms)
                 VALUES (?, 1, ?, NULL, ?)",
            )
            .bind(&row.proposal_id)
            .bind(&row.status)
            .bind(row.created_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(exists.is_none())
    }

    async fn proposal(&self, proposal_id: &str) -> Result<Option<ProposalRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM insight_proposals WHERE proposal_id = ?")
            .bind(proposal_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_proposal).transpose()
    }

    async fn proposals(&self, f: &ProposalFilter) -> Result<Vec<ProposalRow>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM insight_proposals WHERE 1 = 1");
        if let Some(v) = &f.status {
            q.push(" AND status = ").push_bind(v.clone());
        }
        if let Some(v) = &f.workflow_id {
            q.push(" AND workflow_id = ").push_bind(v.clone());
        }
        if let Some(v) = &f.step_id {
            q.push(" AND step_id = ").push_bind(v.clone());
        }
        q.push(" ORDER BY confidence DESC, proposal_id LIMIT ")
            .push_bind(limit(f.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(row_to_proposal).collect()
    }

    async fn set_proposal_status(
        &self,
        proposal_id: &str,
        status: &str,
        note: Option<&str>,
        at_ms: i64,
    ) -> Result<Option<ProposalChange>, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
        let n = sqlx::query(
            "UPDATE insight_proposals SET status = ?, updated_at_ms = ? WHERE proposal_id = ?",
        )
        .bind(status)
        .bind(at_ms)
        .bind(proposal_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let (next,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(MAX(ordinal), 0) + 1 FROM insight_proposal_history WHERE proposal_id = ?",
        )
        .bind(proposal_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO insight_proposal_history (proposal_id, ordinal, status, note, at_ms)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(proposal_id)
        .bind(next)
        .bind(status)
        .bind(note)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(ProposalChange {
            proposal_id: proposal_id.to_owned(),
            ordinal: to_u32(next),
            status: status.to_owned(),
            note: note.map(str::to_owned),
            at_ms,
        }))
    }

    async fn proposal_history(&self, proposal_id: &str) -> Result<Vec<ProposalChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT proposal_id, ordinal, status, note, at_ms FROM insight_proposal_history
             WHERE proposal_id = ? ORDER BY ordinal",
        )
        .bind(proposal_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ProposalChange {
                    proposal_id: r.try_get("proposal_id")?,
                    ordinal: to_u32(r.try_get("ordinal")?),
                    status: r.try_get("status")?,
                    note: r.try_get("note")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }

    async fn add_note(
        &self,
        trace_id: &str,
        kind: &str,
        body: &str,
        at_ms: i64,
    ) -> Result<NoteRow, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin_with(&mut writer.conn, "BEGIN IMMEDIATE").await?;
        let (next,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(MAX(ordinal), 0) + 1 FROM insight_notes WHERE trace_id = ?",
        )
        .bind(trace_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO insight_notes (trace_id, ordinal, kind, created_at_ms, body)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(trace_id)
        .bind(next)
        .bind(kind)
        .bind(at_ms)
        .bind(body)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(NoteRow {
            trace_id: trace_id.to_owned(),
            ordinal: to_u32(next),
            kind: kind.to_owned(),
            created_at_ms: at_ms,
            body: body.to_owned(),
        })
    }

    async fn notes(&self, trace_id: &str) -> Result<Vec<NoteRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT trace_id, ordinal, kind, created_at_ms, body FROM insight_notes
             WHERE trace_id = ? ORDER BY ordinal",
        )
        .bind(trace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NoteRow {
                    trace_id: r.try_get("trace_id")?,
                    ordinal: to_u32(r.try_get("ordinal")?),
                    kind: r.try_get("kind")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }
}
