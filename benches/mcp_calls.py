"""Sends N MCP requests, one after another, over one keep-alive connection to the server.

    python3 benches/mcp_calls.py PORT TOKEN TOOL N PROTOCOL

TOOL is kv_get, kv_set or health (GET /health, the plain-HTTP floor). PROTOCOL 2025-06-18
opens a session first (initialize, then the initialized notification); 2026-07-28 sends each
call on its own, carrying its version in the headers and `_meta`. Any failed call stops it.
Used by scripts/bench-mcp-instructions.sh, which counts the server's instructions per call.
"""

import http.client
import json
import sys


def main() -> None:
    port, token, tool, n, protocol = sys.argv[1:6]
    n = int(n)
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=600)
    base = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Authorization": "Bearer " + token,
    }

    def post(body, extra):
        conn.request("POST", "/mcp", json.dumps(body), {**base, **extra})
        r = conn.getresponse()
        data = r.read()
        if r.status not in (200, 202):
            raise SystemExit(f"{r.status} {data[:200]!r}")
        return r, data

    if tool == "health":
        for _ in range(n):
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"/health answered {r.status}")
        return
    session = {}
    if protocol < "2026-07-28":
        r, _ = post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": protocol,
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "1"},
                },
            },
            {},
        )
        session = {"Mcp-Session-Id": r.getheader("mcp-session-id"), "Mcp-Protocol-Version": protocol}
        post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    for i in range(n):
        if tool == "kv_get":
            args = {"key": "bench"}
        else:
            args = {"key": f"bench-{i % 100}", "value": f"v{i}"}
        params = {"name": tool, "arguments": args}
        extra = session
        if not session:
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": protocol,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
            extra = {"MCP-Protocol-Version": protocol, "Mcp-Method": "tools/call", "Mcp-Name": tool}
        _, data = post({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": params}, extra)
        if b'"result"' not in data or b'"isError":true' in data:
            raise SystemExit(f"call failed: {data[:300]!r}")


if __name__ == "__main__":
    main()
