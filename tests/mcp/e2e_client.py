#!/usr/bin/env python3
"""End-to-end test of `worktrain mcp` with an independent MCP client: the official
Python SDK (`pip install -r tests/mcp/requirements.txt`).

    python3 tests/mcp/e2e_client.py <path-to-worktrain-binary> <worktrain-home>

Spawns the server over stdio, initializes, lists the tools, starts the bundled
quick-task workflow and drives it to completion through a blocked step, a replayed
token, a conflicting resubmission, a tampered and a malformed token, a checkpoint, and
a rehydrate after RESTARTING the server process on the same home. Exits 0 and prints
"N checks passed" on success; exits 1 naming the failed check otherwise.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
except ImportError as exc:  # pragma: no cover - reported to the Rust test
    print(
        f"the python `mcp` package is not importable ({exc}): "
        "pip install -r tests/mcp/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(3)

EXPECTED_TOOLS = [
    "list_workflows",
    "inspect_workflow",
    "start_workflow",
    "continue_workflow",
    "checkpoint_workflow",
    "resume_session",
    "rewind_workflow",
    "check_insights",
]
BRANCH = "feature/mcp-e2e"
NOTES_1 = "Renamed `load` to `load_config` in src/config.rs; callers updated."
NOTES_2 = "`cargo test config` passes (12 tests). No leftovers in the diff."

checks = 0


class CheckFailed(Exception):
    pass


def check(condition, what, detail=None, quiet=False):
    global checks
    if not condition:
        extra = "" if detail is None else f"\n  detail: {detail}"
        raise CheckFailed(f"{what}{extra}")
    checks += 1
    if not quiet:
        print(f"ok   {what}", flush=True)


def text_of(result):
    check(len(result.content) >= 1, "result has content", result, quiet=True)
    first = result.content[0]
    check(first.type == "text", "the first content block is text", first, quiet=True)
    return first.text


def ok_step(result, outcome, what):
    """A successful step result: text first, the engine's response as structured content."""
    check(not result.is_error, f"{what}: isError is false", text_of(result) if result.content else result)
    sc = result.structured_content
    check(isinstance(sc, dict), f"{what}: structured content is an object", sc)
    check(sc.get("outcome") == outcome, f"{what}: outcome is {outcome}", sc.get("outcome"))
    text = text_of(result)
    advance = sc["tokens"].get("advance")
    if advance:
        check(advance in text, f"{what}: the text names the advance token to send next")
    return sc, text


def tool_error(result, code, what):
    check(result.is_error, f"{what}: isError is true", result)
    sc = result.structured_content
    check(
        isinstance(sc, dict) and sorted(sc) == ["code", "hint", "message", "retry"],
        f"{what}: structured content is {{code, message, retry, hint}}",
        sc,
    )
    check(sc["code"] == code, f"{what}: code is {code}", sc)
    check(code in text_of(result), f"{what}: the text names the code")
    return sc


def tamper(token):
    """Change one character of the signature: still well-formed, no longer valid."""
    i = len(token) - 3
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def server_params(binary, home, workspace):
    env = {"WORKTRAIN_HOME": home}
    return StdioServerParameters(command=binary, args=["mcp"], env=env, cwd=workspace)


async def first_process(session, workspace):
    init_started = time.perf_counter()
    init = await session.initialize()
    print(f"info initialize round-trip: {(time.perf_counter() - init_started) * 1000:.1f} ms", flush=True)
    check(init.server_info.name == "worktrain", "initialize: server is worktrain", init.server_info)
    check(init.capabilities.tools is not None, "initialize: the tools capability is offered")

    tools = (await session.list_tools()).tools
    check([t.name for t in tools] == EXPECTED_TOOLS, "tools/list: exactly the eight tools", [t.name for t in tools])
    for t in tools:
        check(t.input_schema.get("type") == "object", f"tools/list: {t.name} has an object input schema")
        check(bool(t.description) and len(t.description) > 80, f"tools/list: {t.name} is described")

    listed = await session.call_tool("list_workflows", {})
    check(not listed.is_error, "list_workflows succeeds")
    ids = [w["id"] for w in listed.structured_content["workflows"]]
    check("quick-task" in ids, "list_workflows: the bundled quick-task is listed", ids)

    started = await session.call_tool(
        "start_workflow",
        {"workflow": "quick-task", "goal": "Rename the config loader", "workspace": workspace},
    )
    sc, text = ok_step(started, "started", "start_workflow")
    check(sc["step"]["id"] == "do-it", "start_workflow: the first step is do-it")
    check(text.startswith("**STARTED**"), "start_workflow: the text starts with the outcome", text[:80])
    check("Rename the config loader" in text, "start_workflow: the prompt (with the goal) is in the text")
    session_id = sc["session_id"]
    first_advance = sc["tokens"]["advance"]

    # Empty notes: the step blocks with notes_required and a new token.
    blocked = await session.call_tool("continue_workflow", {"token": first_advance, "notes": ""})
    bsc, btext = ok_step(blocked, "blocked", "empty notes")
    codes = [b["code"] for b in bsc.get("blockers", [])]
    check("notes_required" in codes, "empty notes: blocked with notes_required", bsc.get("blockers"))
    second_advance = bsc["tokens"]["advance"]
    check(second_advance != first_advance, "blocked: a new advance token is issued")
    check("NEW token" in btext, "blocked: the text says to resend with the new token")

    advanced = await session.call_tool("continue_workflow", {"token": second_advance, "notes": NOTES_1})
    asc, _ = ok_step(advanced, "advanced", "continue with the new token")
    check(asc["step"]["id"] != sc["step"]["id"], "continue: the next step is a different step", asc["step"]["id"])

    # Same token, same output: the recorded response, identical structured content.
    replayed = await session.call_tool("continue_workflow", {"token": second_advance, "notes": NOTES_1})
    rsc, rtext = ok_step(replayed, "advanced", "replayed token")
    check(rsc == asc, "replayed token: identical structured content", (rsc, asc))
    check("Replayed" in rtext, "replayed token: the text says it was a replay")

    conflict = await session.call_tool("continue_workflow", {"token": second_advance, "notes": "something else"})
    tool_error(conflict, "token_conflict", "used token with different output")

    tampered = await session.call_tool("continue_workflow", {"token": tamper(asc["tokens"]["advance"]), "notes": NOTES_2})
    tool_error(tampered, "token_bad_signature", "tampered token")

    garbage = await session.call_tool("continue_workflow", {"token": "definitely-not-a-token", "notes": NOTES_2})
    tool_error(garbage, "token_malformed", "malformed token")

    bad_args = await session.call_tool("continue_workflow", {"tokn": asc["tokens"]["advance"]})
    tool_error(bad_args, "invalid_input", "misspelled argument")

    checkpoint = await session.call_tool(
        "checkpoint_workflow", {"token": asc["tokens"]["checkpoint"], "notes": "Ran half the suite so far."}
    )
    csc, _ = ok_step(checkpoint, "checkpointed", "checkpoint")
    check(csc["step"]["id"] == asc["step"]["id"], "checkpoint: the step is unchanged")

    insights = await session.call_tool("check_insights", {"workflow": "quick-task", "step": "do-it"})
    check(not insights.is_error, "check_insights: isError is false", text_of(insights))
    check(
        text_of(insights).startswith("No recurring problems"),
        "check_insights: a fresh store has no recurring problems",
        text_of(insights),
    )

    still = await session.list_tools()
    check(len(still.tools) == len(EXPECTED_TOOLS), "the server keeps serving after the errors")
    return session_id, asc["tokens"]["resume"], asc["tokens"]["advance"], asc["step"]["id"]


async def second_process(session, workspace, session_id, resume_token, advance_before, step_id):
    await session.initialize()

    found = await session.call_tool("resume_session", {"workspace": workspace, "branch": BRANCH})
    check(not found.is_error, "resume_session succeeds after the restart", found)
    candidates = found.structured_content["sessions"]
    ids = [c["session_id"] for c in candidates]
    check(session_id in ids, "resume_session: finds the session by workspace and branch", ids)
    candidate = candidates[ids.index(session_id)]
    check(candidate["current_step"]["id"] == step_id, "resume_session: reports the current step")
    check(candidate["branch"] == BRANCH, "resume_session: reports the branch")
    check(len(candidate["resume_token"]) == 61, "resume_session: returns a resume token")
    for key in ["workflow", "goal", "status", "updated_at"]:
        check(key in candidate, f"resume_session: reports {key}")

    rehydrated = await session.call_tool("continue_workflow", {"token": resume_token, "intent": "rehydrate"})
    hsc, htext = ok_step(rehydrated, "rehydrated", "rehydrate after restart")
    check(hsc["session_id"] == session_id, "rehydrate: same session")
    check(hsc["step"]["id"] == step_id, "rehydrate: the current step is the one we left")
    check(any(NOTES_1 in r["notes"] for r in hsc.get("recap", [])), "rehydrate: recaps the earlier notes")
    check(NOTES_1 in htext, "rehydrate: the recap is in the text")
    check(hsc["tokens"]["advance"] == advance_before, "rehydrate: the advance token for the same step is the same")

    # Drive the remaining steps to completion (supplying any artifact a step's contract asks for).
    current = hsc
    for _ in range(50):
        step = current["step"]
        args = {"token": current["tokens"]["advance"], "notes": NOTES_2}
        contract = step.get("output_contract")
        if contract:
            args["artifacts"] = [contract["example"]]
        outputs = step.get("context_outputs") or []
        if outputs:
            args["context"] = {key: "e2e" for key in outputs}
        last_args = args
        done = await session.call_tool("continue_workflow", args)
        check(not done.is_error, f"step {step['id']}: accepted", done)
        current = done.structured_content
        if current["outcome"] == "complete":
            break
        check(current["outcome"] == "advanced", f"step {step['id']}: advanced", current)
    dsc, dtext = ok_step(done, "complete", "final step")
    check("advance" not in dsc["tokens"], "complete: no advance token")
    check("complete" in dtext.lower(), "complete: the text says so")

    again = await session.call_tool("continue_workflow", last_args)
    asc, _ = ok_step(again, "complete", "replay after completion")
    check(asc == dsc, "replay after completion: identical structured content")

    open_only = await session.call_tool("resume_session", {"workspace": workspace})
    check(
        session_id not in [c["session_id"] for c in open_only.structured_content["sessions"]],
        "resume_session: completed sessions are left out by default",
    )
    with_complete = await session.call_tool("resume_session", {"workspace": workspace, "include_complete": True})
    check(
        session_id in [c["session_id"] for c in with_complete.structured_content["sessions"]],
        "resume_session: include_complete finds it",
    )


async def main(binary, home):
    with tempfile.TemporaryDirectory(prefix="wt-mcp-e2e-") as tmp:
        workspace = os.path.realpath(tmp)
        # A real repository checked out on a branch (no commit yet), so the session
        # records the branch.
        subprocess.run(["git", "init", "-q", workspace], check=True)
        subprocess.run(
            ["git", "-C", workspace, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}"], check=True
        )

        params = server_params(binary, home, workspace)
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=30) as session:
                session_id, resume, advance, step_id = await first_process(session, workspace)
        print("info server process 1 stopped; starting a new one on the same home", flush=True)
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=30) as session:
                await second_process(session, workspace, session_id, resume, advance, step_id)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    binary, home = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    try:
        asyncio.run(asyncio.wait_for(main(binary, home), timeout=120))
    except CheckFailed as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        print(f"{checks} passed, 1 failed", flush=True)
        sys.exit(1)
    print(f"python MCP e2e: {checks} checks passed")
    print(f"{checks} passed, 0 failed", flush=True)
