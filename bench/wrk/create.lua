-- wrk script: POST /secrets with a unique name per request and a ~1 KiB value.
-- Usage: wrk ... -s bench/wrk/create.lua http://127.0.0.1:PORT -- <run-prefix>
-- Names are "<run-prefix>-t<thread>-<counter>": unique per run, per thread and per request.
-- Prints one "RESULT ..." line (see common.lua) that bench/http.sh parses.

-- setup, response and done (the RESULT line) come from common.lua next to this file.
package.path = (debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or "") .. "?.lua;" .. package.path
require("common")

local prefix, counter, value
local headers = with_auth({ ["Content-Type"] = "application/json" })

function init(args)
  prefix = (args[1] or "bench") .. "-t" .. tostring(tid)
  counter = 0
  non2xx = 0
  -- 1024 printable characters (no JSON escaping needed).
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  value = string.rep(alphabet, 16)
end

function request()
  counter = counter + 1
  local body = '{"name":"' .. prefix .. "-" .. counter .. '","value":"' .. value ..
    '","scope_type":"global"}'
  return wrk.format("POST", "/secrets", headers, body)
end
