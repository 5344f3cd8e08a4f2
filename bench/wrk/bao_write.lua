-- wrk script: OpenBao KV v2 write of a fresh key per request, POST /v1/secret/data/<name> with
-- {"data":{"value":"<1024 characters>"}}, the same value as create.lua.
-- Usage: BAO_BENCH_TOKEN=<token> wrk ... -s bench/wrk/bao_write.lua http://127.0.0.1:PORT -- <run-prefix>
-- Names are "<run-prefix>-t<thread>-<counter>": unique per run, per thread and per request.
-- The token goes in X-Vault-Token; it comes from the environment so that it is never printed.
-- Prints one "RESULT ..." line (see common.lua) that bench/peers.sh parses.

-- setup, response and done (the RESULT line) come from common.lua next to this file.
package.path = (debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or "") .. "?.lua;" .. package.path
require("common")

local prefix, counter, body, headers

function init(args)
  non2xx = 0
  local token = assert(os.getenv("BAO_BENCH_TOKEN"), "BAO_BENCH_TOKEN is not set")
  headers = { ["X-Vault-Token"] = token, ["Content-Type"] = "application/json" }
  prefix = (args[1] or "bench") .. "-t" .. tostring(tid)
  counter = 0
  -- 1024 printable characters (no JSON escaping needed), as in create.lua.
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  body = '{"data":{"value":"' .. string.rep(alphabet, 16) .. '"}}'
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/secret/data/" .. prefix .. "-" .. counter, headers, body)
end
