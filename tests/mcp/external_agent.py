#!/usr/bin/env python3
"""An external agent built the way real agent CLIs (Claude Code, Codex) are: it is given
an MCP config file (`{"mcpServers": {"worktrain": {"command", "args", "env"}}}`), starts
that server over stdio with the official Python MCP SDK, and builds its tool set ONLY from
`tools/list` — it knows no tool names in advance:

* the step reader is the listed read-only tool that takes no required arguments;
* the step submitter is the listed tool whose input schema has a `notes` property.

It then works the session: read the step, do it (append a line naming the step to
WORK.md in its working directory, the session's worktree), submit notes, and repeat until
the workflow is complete. Used by the daemon end-to-end suite as a `kind: command` agent:

    external_agent.py <mcp-config.json>      (the step prompt arrives on stdin; ignored)

Exits 0 when the workflow is complete, 1 with a reason otherwise.
"""

import asyncio
import json
import sys
from pathlib import Path

try:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
except ImportError as exc:  # pragma: no cover - reported through the daemon's run log
    print(f"the python `mcp` package is not importable ({exc})", file=sys.stderr)
    sys.exit(3)


def pick_tools(tools):
    """The step reader and the step submitter, chosen from what the server lists."""
    reader = submitter = None
    for t in tools:
        schema = t.input_schema or {}
        props = schema.get("properties", {})
        read_only = bool(t.annotations and t.annotations.read_only_hint)
        if "notes" in props:
            submitter = t.name
        elif read_only and not schema.get("required"):
            reader = t.name
    return reader, submitter


async def work(config_path):
    server = json.loads(Path(config_path).read_text())["mcpServers"]["worktrain"]
    params = StdioServerParameters(
        command=server["command"], args=server.get("args", []), env=server.get("env")
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = (await session.list_tools()).tools
            names = [t.name for t in listed]
            print(f"tools/list: {names}", flush=True)
            reader, submitter = pick_tools(listed)
            if reader is None or submitter is None:
                print(f"cannot work with these tools: {names}", file=sys.stderr)
                return 1
            for _ in range(20):
                current = await session.call_tool(reader, {})
                if current.is_error:
                    print(f"{reader} failed: {current.content}", file=sys.stderr)
                    return 1
                state = current.structured_content or {}
                if "complete" in (state.get("outcome"), state.get("intent")):
                    return 0
                step = (state.get("step") or {}).get("id")
                if step is None:
                    print(f"no step to do: {state}", file=sys.stderr)
                    return 1
                with open("WORK.md", "a", encoding="utf-8") as f:
                    f.write(f"did step {step}\n")
                done = await session.call_tool(
                    submitter, {"notes": f"Appended `did step {step}` to WORK.md."}
                )
                result = done.structured_content or {}
                print(f"{submitter} {step}: {result.get('outcome')}", flush=True)
                if done.is_error:
                    print(f"{submitter} failed: {done.content}", file=sys.stderr)
                    return 1
                if result.get("outcome") == "complete":
                    return 0
            print("the workflow did not complete within 20 steps", file=sys.stderr)
            return 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.stdin.read()
    sys.exit(asyncio.run(work(sys.argv[1])))
