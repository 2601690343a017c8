#!/usr/bin/env bash
# A worktrain coordinator: review and fix in parallel, then route on the review's verdict.
#
#   examples/coordinator.sh "the parser drops empty lines" [WORKSPACE]
#
# 1. spawns a read-only review session and a fix session at the same time,
# 2. awaits both (`worktrain await` exits 0 all succeeded, 1 some failed, 2 timeout),
# 3. reads the review's `review_verdict` artifact and routes:
#      clean    → the fix is ready,
#      minor    → the fix is ready; the findings are printed for the PR description,
#      blocking → a follow-up fix session is spawned with the findings, and awaited.
#
# Idempotency keys derive from the goal, so running the script again after a crash
# picks up the same sessions instead of starting new ones.
#
# Environment: WORKTRAIN (the binary; default `worktrain`), WORKTRAIN_HOME / WORKTRAIN_DAEMON
# (which daemon), REVIEW_WORKFLOW (default mr-review), FIX_WORKFLOW (default coding-task),
# AWAIT_TIMEOUT (default 30m). Needs jq.
set -euo pipefail

goal=${1:?usage: coordinator.sh GOAL [WORKSPACE]}
workspace=${2:-$PWD}
wt=${WORKTRAIN:-worktrain}
review_workflow=${REVIEW_WORKFLOW:-mr-review}
fix_workflow=${FIX_WORKFLOW:-coding-task}
timeout=${AWAIT_TIMEOUT:-30m}
key=$(printf '%s' "$goal" | sha256sum | cut -c1-16)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

review=$("$wt" spawn --workflow "$review_workflow" --goal "Review: $goal" \
  --workspace "$workspace" --readonly --idempotency-key "review-$key")
fix=$("$wt" spawn --workflow "$fix_workflow" --goal "Fix: $goal" \
  --workspace "$workspace" --idempotency-key "fix-$key")
echo "review session: $review"
echo "fix session:    $fix"

set +e
"$wt" --json await "$review" "$fix" --all --timeout "$timeout" >"$results"
status=$?
set -e
case $status in
  0) ;;
  1)
    echo "a session did not succeed:"
    jq -r '.results[] | "  \(.session_id) \(.outcome) \(.failure // "")"' "$results"
    exit 1
    ;;
  2) echo "timed out after $timeout; the sessions keep running (await them again)"; exit 2 ;;
  *) echo "worktrain await failed (exit $status)"; exit "$status" ;;
esac

verdict=$(jq -r --arg id "$review" \
  '.results[] | select(.session_id == $id) | .artifacts.review_verdict.verdict // "none"' "$results")
findings=$(jq -r --arg id "$review" \
  '.results[] | select(.session_id == $id) | .artifacts.review_verdict.findings // [] | .[]
   | "- [\(.severity)] \(.file // "?"):\(.line // "?") \(.message)"' "$results")
echo "verdict: $verdict"

case "$verdict" in
  clean)
    echo "review is clean: fix $fix is ready"
    ;;
  minor)
    echo "minor findings; fix $fix is ready. Mention in the PR:"
    printf '%s\n' "$findings"
    ;;
  blocking)
    followup=$("$wt" spawn --workflow "$fix_workflow" \
      --goal "Address review: $goal
Findings:
$findings" \
      --workspace "$workspace" --parent "$fix" --idempotency-key "address-$key")
    echo "blocking findings; follow-up fix session: $followup"
    "$wt" await "$followup" --timeout "$timeout"
    ;;
  *)
    echo "the review produced no verdict; inspect it with: $wt session show $review"
    exit 1
    ;;
esac
