"""Reference point for the MCP server benchmark: a minimal KV server written with the official
Python MCP SDK (MCPServer, Streamable HTTP on 127.0.0.1), keeping values in a dict.

  python py_kv_server.py PORT
"""
import sys

from mcp.server.mcpserver import MCPServer

store: dict[str, str] = {}
server = MCPServer("py-kv", log_level="WARNING")


@server.tool()
def kv_get(key: str) -> dict:
    """Read a key."""
    return {"found": key in store, "key": key, "value": store.get(key)}


@server.tool()
def kv_set(key: str, value: str) -> dict:
    """Write a key."""
    store[key] = value
    return {"key": key}


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
