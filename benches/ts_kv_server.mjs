// Second reference point for the MCP server benchmark: the same minimal KV server as
// py_kv_server.py, written with the official TypeScript MCP SDK (McpServer, Streamable HTTP
// with a session per client, on 127.0.0.1), keeping values in a Map. No auth, no persistence.
//
//   node benches/ts_kv_server.mjs PORT
//
// The SDK is the one `npm ci --prefix tests/mcp` installs (the MCP Inspector's).
import http from "node:http";
import { randomUUID } from "node:crypto";

const sdk = new URL("../tests/mcp/node_modules/@modelcontextprotocol/sdk/dist/esm/", import.meta.url);
const { McpServer } = await import(new URL("server/mcp.js", sdk));
const { StreamableHTTPServerTransport } = await import(new URL("server/streamableHttp.js", sdk));
const { isInitializeRequest } = await import(new URL("types.js", sdk));
const { z } = await import(new URL("../tests/mcp/node_modules/zod/index.js", import.meta.url));

const store = new Map();
const sessions = new Map();

function result(out) {
  return { content: [{ type: "text", text: JSON.stringify(out) }], structuredContent: out };
}

function kvServer() {
  const server = new McpServer({ name: "ts-kv", version: "1.0.0" });
  server.registerTool(
    "kv_get",
    { description: "Read a key.", inputSchema: { key: z.string() } },
    async ({ key }) => result({ found: store.has(key), key, value: store.get(key) ?? null }),
  );
  server.registerTool(
    "kv_set",
    { description: "Write a key.", inputSchema: { key: z.string(), value: z.string() } },
    async ({ key, value }) => {
      store.set(key, value);
      return result({ key });
    },
  );
  return server;
}

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined;
}

http
  .createServer(async (req, res) => {
    try {
      const parsed = req.method === "POST" ? await body(req) : undefined;
      const id = req.headers["mcp-session-id"];
      let transport = id ? sessions.get(id) : undefined;
      if (!transport) {
        if (req.method !== "POST" || !isInitializeRequest(parsed)) {
          res.writeHead(400).end("no session");
          return;
        }
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (sid) => sessions.set(sid, transport),
        });
        transport.onclose = () => transport.sessionId && sessions.delete(transport.sessionId);
        await kvServer().connect(transport);
      }
      await transport.handleRequest(req, res, parsed);
    } catch (e) {
      if (!res.headersSent) res.writeHead(500).end(String(e));
    }
  })
  .listen(Number(process.argv[2]), "127.0.0.1");
