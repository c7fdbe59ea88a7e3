"""An external MCP server for the tests (the Python MCP SDK's MCPServer over Streamable HTTP on
127.0.0.1), which wants a bearer token: what a team would register with `tools_register`.

Tools: `forecast` (read-only), `report` (writes: it records a report), `reports` (read-only:
how many were recorded).

Run as: python tests/mcp/external_server.py PORT TOKEN
"""
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

PORT, TOKEN = int(sys.argv[1]), sys.argv[2]
REPORTS = []

server = MCPServer("weather")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"sunny in {city}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False))
def report(text: str) -> str:
    """Record a weather report."""
    REPORTS.append(text)
    return f"report {len(REPORTS)} recorded"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
def reports() -> str:
    """How many reports were recorded."""
    return str(len(REPORTS))


inner = server.streamable_http_app(stateless_http=True, json_response=True, host="127.0.0.1")


async def app(scope, receive, send):
    """Refuses requests without the bearer token."""
    if scope["type"] == "http":
        headers = dict(scope.get("headers") or [])
        if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"a bearer token is required\n"})
            return
    await inner(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
