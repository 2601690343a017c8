#!/usr/bin/env python3
"""continue_workflow round-trip latency through the official MCP Python SDK (a real,
independent client; its own per-call overhead is included in the numbers).

    python3 tests/mcp/bench_client.py <path-to-worktrain-binary> [sessions]

Runs <sessions> (default 20) sessions of a generated 20-step workflow on a fresh home
in a temporary directory and prints p50 / p90 / p99 / max of each call_tool round-trip.
"""

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

STEPS = 20


def workflow():
    lines = [
        "schemaVersion: 1",
        "id: bench-20",
        "name: Bench",
        "description: benchmark workflow",
        "version: '1'",
        "steps:",
    ]
    for i in range(STEPS):
        lines += [f"  - id: s{i}", f"    title: Step {i}", f"    prompt: Do step {i} of {{{{goal}}}} and report."]
    return "\n".join(lines) + "\n"


def pct(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, round((len(sorted_ms) - 1) * p))]


async def main(binary, sessions):
    with tempfile.TemporaryDirectory(prefix="wt-mcp-pybench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        wf = Path(tmp) / "bench-20.yaml"
        wf.write_text(workflow())
        params = StdioServerParameters(
            command=binary, args=["mcp"], env={"WORKTRAIN_HOME": str(Path(tmp) / "home")}, cwd=tmp
        )
        samples = []
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await session.list_tools()
                for s in range(sessions):
                    r = await session.call_tool("start_workflow", {"workflow": str(wf), "goal": f"bench {s}"})
                    token = r.structured_content["tokens"]["advance"]
                    for step in range(STEPS):
                        t0 = time.perf_counter()
                        r = await session.call_tool(
                            "continue_workflow", {"token": token, "notes": f"Step {step} done: it holds."}
                        )
                        samples.append((time.perf_counter() - t0) * 1000)
                        assert not r.is_error, r
                        token = r.structured_content["tokens"].get("advance")
        samples.sort()
        print(
            f"python SDK client, continue_workflow round-trip ({sessions} sessions x {STEPS} steps): "
            f"n={len(samples)} p50 {pct(samples, 0.5):.3f} ms · p90 {pct(samples, 0.9):.3f} ms · "
            f"p99 {pct(samples, 0.99):.3f} ms · max {samples[-1]:.3f} ms · mean {statistics.mean(samples):.3f} ms"
        )


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(os.path.abspath(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else 20))
