#!/usr/bin/env python3
"""`dochash mcp` driven by a client no one here wrote: the official MCP Python SDK.

    python3 tests/benches/mcp_client.py --dochash target/release/dochash --notes DIR [--home DIR]
        [--model DIR] [--queries N] [--runs N]

Sets up its own environment (a virtualenv under target/ with the SDK from the package index,
pinned), indexes DIR into a fresh home (unless --home holds one), then:
1. lists the tools and calls each through the SDK's stdio client (which checks the structured
   results against each tool's output schema), printing what came back;
2. times the answer to `initialize` from process start, over --runs fresh processes (the first
   one after the page cache was dropped, when this runs as root: "cold");
3. times searches through MCP against `dochash query` on the same index, asked through the
   same owner (the MCP server owns the index, and `dochash query` asks it over its socket), and
   against `dochash query` with no owner (a process that loads the model each time).
Prints a Markdown report for docs/BENCHMARKS.md.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SDK = "mcp==2.3.0"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "mcp-venv"


def ensure_sdk():
    try:
        import mcp  # noqa: F401

        return
    except ImportError:
        pass
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", SDK], check=True)
    os.execv(str(py), [str(py), *sys.argv])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def time_initialize(args, env):
    """Milliseconds from spawning `dochash mcp` to its `initialize` answer."""
    line = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        }
    ).encode() + b"\n"
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [args.dochash, "mcp", "--no-train"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    p.stdin.write(line)
    p.stdin.flush()
    answer = p.stdout.readline()
    ms = (time.perf_counter() - t0) * 1000
    assert json.loads(answer)["result"]["serverInfo"]["name"] == "dochash", answer
    p.stdin.close()
    p.wait(timeout=60)
    return ms


def queries_from(notes, n):
    """Headings of the notes, as a person would remember them (deterministic)."""
    out = []
    for f in sorted(Path(notes).rglob("*.md")):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("## ") and 3 <= len(line[3:].split()) <= 8:
                out.append(line[3:].strip().strip("`"))
        if len(out) >= n:
            break
    return out[:n]


async def drive(args, env, queries):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    server = StdioServerParameters(command=args.dochash, args=["mcp", "--no-train"], env=env)
    report = {}
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            report["server"] = f"{init.server_info.name} {init.server_info.version}"
            report["protocol"] = init.protocol_version
            tools = await s.list_tools()
            report["tools"] = [
                (t.name, sorted(t.input_schema.get("properties", {})), t.input_schema.get("required", []))
                for t in tools.tools
            ]
            # Wait for the owner to be idle (the start-up update looked at every file).
            for _ in range(600):
                st = await s.call_tool("status", {})
                if st.structured_content["role"] != "starting" and not st.structured_content["job"]:
                    break
                await asyncio.sleep(0.1)
            report["status"] = st.structured_content
            r = await s.call_tool("search", {"query": queries[0], "k": 3})
            assert not r.is_error, r
            hits = r.structured_content["hits"]
            report["search"] = [
                (Path(h["path"]).name, h["first_line"], h["last_line"], h["found_by"], round(h["score"], 3))
                for h in hits
            ]
            r = await s.call_tool(
                "read", {"path": hits[0]["path"], "first_line": hits[0]["first_line"], "last_line": hits[0]["first_line"] + 2}
            )
            assert not r.is_error, r
            report["read"] = {k: r.structured_content[k] for k in ("first_line", "last_line", "total_lines", "truncated")}
            r = await s.call_tool("read", {"path": "/etc/passwd"})
            report["read_outside"] = (r.is_error, r.content[0].text)
            r = await s.call_tool("search", {"query": "x", "k": 1000})
            report["search_k_1000"] = (r.is_error, r.content[0].text)

            # Latency: each query once to warm up, then timed through MCP and through the
            # same owner's socket by `dochash query`.
            for q in queries:
                await s.call_tool("search", {"query": q, "k": 10})
            mcp_ms = []
            for q in queries:
                t0 = time.perf_counter()
                r = await s.call_tool("search", {"query": q, "k": 10})
                mcp_ms.append((time.perf_counter() - t0) * 1000)
                assert not r.is_error, r
            cli_ms = []
            for q in queries:
                t0 = time.perf_counter()
                subprocess.run([args.dochash, "query", "--json", q], env=env, check=False, capture_output=True)
                cli_ms.append((time.perf_counter() - t0) * 1000)
            report["mcp_ms"] = mcp_ms
            report["cli_owner_ms"] = cli_ms
    # No owner now: `dochash query` opens the index and loads the model itself.
    solo = []
    for q in queries[: min(len(queries), 10)]:
        t0 = time.perf_counter()
        subprocess.run([args.dochash, "query", "--json", q], env=env, check=False, capture_output=True)
        solo.append((time.perf_counter() - t0) * 1000)
    report["cli_solo_ms"] = solo
    return report


def main():
    ensure_sdk()
    ap = argparse.ArgumentParser()
    ap.add_argument("--dochash", required=True)
    ap.add_argument("--notes", required=True)
    ap.add_argument("--home", default=str(ROOT / "target" / "mcp-bench-home"))
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--model", help="a model folder (default: dochash's default model)")
    args = ap.parse_args()
    args.dochash = str(Path(args.dochash).resolve())
    env = dict(os.environ, DOCHASH_HOME=args.home, NO_COLOR="1")
    if args.model:
        env["DOCHASH_MODEL"] = str(Path(args.model).resolve())
    if not (Path(args.home) / "index").exists():
        subprocess.run([args.dochash, "index", "--quiet", args.notes], env=env, check=True)

    cold = drop_caches()
    init_ms = [time_initialize(args, env) for _ in range(args.runs)]
    queries = queries_from(args.notes, args.queries)
    report = asyncio.run(drive(args, env, queries))

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; client: MCP Python SDK ({SDK})")
    print(f"server: {report['server']}, protocol {report['protocol']}")
    print("\ntools (properties; required):")
    for name, props, req in report["tools"]:
        print(f"- {name}: {', '.join(props) or '-'}; required {req}")
    st = report["status"]
    print(f"\nstatus: role {st['role']}, {st['files']} files, {st['passages']} passages, model {st['model']}")
    print(f"search {queries[0]!r} (k=3):")
    for h in report["search"]:
        print(f"- {h}")
    print(f"read the top hit's first 3 lines: {report['read']}")
    print(f"read /etc/passwd: error={report['read_outside'][0]}: {report['read_outside'][1]}")
    print(f"search k=1000: error={report['search_k_1000'][0]}: {report['search_k_1000'][1]}")
    label = "first after dropping the page cache" if cold else "first (page cache not dropped: not root)"
    print(f"\ninitialize answered after: {label} {init_ms[0]:.1f} ms; warm (next {len(init_ms) - 1}) "
          f"median {statistics.median(init_ms[1:]):.1f} ms, p95 {pct(init_ms[1:], 95):.1f} ms")
    n = len(report["mcp_ms"])
    for name, key in [
        ("search through MCP (one session)", "mcp_ms"),
        ("`dochash query` through the same owner", "cli_owner_ms"),
        ("`dochash query` with no owner", "cli_solo_ms"),
    ]:
        xs = report[key]
        print(f"{name}: {len(xs)} queries, median {statistics.median(xs):.1f} ms, p95 {pct(xs, 95):.1f} ms")
    ratio = statistics.median(report["cli_owner_ms"]) / statistics.median(report["mcp_ms"])
    print(f"median ratio `dochash query` via owner / MCP: {ratio:.2f} ({n} queries)")


if __name__ == "__main__":
    main()
