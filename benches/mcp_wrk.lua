-- wrk script: every connection is one MCP session over Streamable HTTP (initialize, the
-- initialized notification, then one tool call after another).
--
--   wrk -t64 -c64 -d10s -s benches/mcp_wrk.lua http://127.0.0.1:PORT/mcp -- TOKEN TOOL [PROTOCOL]
--
-- PROTOCOL is 2025-06-18 (the default: a session per connection, as above) or 2026-07-28,
-- which has no sessions: no set-up, and every request carries its protocol version and the
-- client's capabilities (in `_meta`, and the version and method in headers).
--
-- TOOL is kv_get, kv_set or mixed (the soak's mix: per ten calls four kv_get, two kv_set,
-- one each of kv_list, kv_delete, events_send and tools/list). Run one thread per connection (-t equal to -c): wrk keeps this
-- script's state per thread, and a session id belongs to its connection. Only the tool calls
-- are counted as requests in the results: the two set-up requests happen once per session.

local token, tool, protocol
local session = nil
local stage = "initialize"
local calls = 0
local stateless = false

function init(args)
   token = args[1]
   tool = args[2] or "kv_get"
   protocol = args[3] or "2025-06-18"
   stateless = protocol >= "2026-07-28"
   if stateless then stage = "calls" end
end

local function headers()
   local h = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["Authorization"] = "Bearer " .. token,
   }
   if session then
      h["Mcp-Session-Id"] = session
      h["Mcp-Protocol-Version"] = "2025-06-18"
   end
   return h
end

local meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
   .. '"io.modelcontextprotocol/clientCapabilities":{}}'

-- A request of the calls stage: its body, and its method and tool for 2026-07-28's headers.
local function call(method, name, params)
   local h = headers()
   if stateless then
      h["MCP-Protocol-Version"] = protocol
      h["Mcp-Method"] = method
      if name then h["Mcp-Name"] = name end
      params = params and (params .. "," .. meta) or meta
   end
   params = params and ('"params":{' .. params .. '},') or ""
   return wrk.format("POST", nil, h,
      '{"jsonrpc":"2.0","id":' .. calls .. ',' .. params .. '"method":"' .. method .. '"}')
end

function request()
   if stage == "initialize" then
      return wrk.format("POST", nil, headers(),
         '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
         .. '"capabilities":{},"clientInfo":{"name":"wrk","version":"1"}}}')
   elseif stage == "initialized" then
      return wrk.format("POST", nil, headers(),
         '{"jsonrpc":"2.0","method":"notifications/initialized"}')
   end
   calls = calls + 1
   local name, args = tool, nil
   if tool == "mixed" then
      local slot = calls % 10
      local key = '"bench-' .. (calls % 1000) .. '"'
      if slot < 4 then
         name, args = "kv_get", '{"key":' .. key .. '}'
      elseif slot < 6 then
         name, args = "kv_set", '{"key":' .. key .. ',"value":"v' .. calls .. '"}'
      elseif slot == 6 then
         name, args = "kv_list", '{"prefix":"bench-1","limit":10}'
      elseif slot == 7 then
         name, args = "kv_delete", '{"key":' .. key .. '}'
      elseif slot == 8 then
         name, args = "events_send", '{"detail_type":"soak","detail":{"n":' .. calls .. '}}'
      else
         return call("tools/list", nil, nil)
      end
   elseif tool == "kv_set" then
      args = '{"key":"bench-' .. (calls % 100) .. '","value":"v' .. calls .. '"}'
   else
      args = '{"key":"bench"}'
   end
   return call("tools/call", name, '"name":"' .. name .. '","arguments":' .. args)
end

function response(status, hdrs, body)
   if stage == "initialize" then
      session = hdrs["mcp-session-id"] or hdrs["Mcp-Session-Id"]
      stage = "initialized"
   elseif stage == "initialized" then
      stage = "calls"
   elseif status ~= 200 or not string.find(body, '"result"', 1, true)
      or string.find(body, '"isError":true', 1, true) then
      -- A failed call is counted by wrk as an error only for non-2xx; say it plainly.
      io.stderr:write("call failed: " .. status .. " " .. string.sub(body, 1, 200) .. "\n")
   end
end
