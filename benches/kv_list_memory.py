"""Memory of kv_list over large values: 1000 entries of 350 KiB, the server's resident memory
before and during four concurrent kv_list calls (limit 1000), through the official Python MCP
SDK. Results and the command: docs/benchmarks/kv-list-memory.md.

Usage: kv_list_memory.py PORT TOKEN PID (of a running `agentbus up`)"""
import asyncio, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

port, token, pid = sys.argv[1], sys.argv[2], sys.argv[3]
url = f"http://127.0.0.1:{port}/mcp"
hdr = {"Authorization": f"Bearer {token}"}

def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

async def session(fn):
    async with create_mcp_http_client(headers=hdr) as http:
        async with streamable_http_client(url, http_client=http) as (r, w):
            async with ClientSession(r, w) as s:
                await s.initialize()
                return await fn(s)

async def fill(s):
    value = "x" * (350 * 1024 - 64)
    for i in range(1000):
        res = await s.call_tool("kv_set", {"key": f"big/{i:04}", "value": value, "no_expiry": True})
        assert not res.is_error, res

async def listing(s):
    res = await s.call_tool("kv_list", {"prefix": "big/", "limit": 1000})
    assert not res.is_error, res
    return len(res.structured_content["entries"])

async def main():
    await session(fill)
    before = rss()
    peak = before
    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, rss())
            await asyncio.sleep(0.01)
    w = asyncio.create_task(watch())
    counts = await asyncio.gather(*[session(listing) for _ in range(4)])
    w.cancel()
    print(f"entries per page: {counts}; RSS before {before} MiB, peak during 4 concurrent kv_list {peak} MiB")

asyncio.run(main())
