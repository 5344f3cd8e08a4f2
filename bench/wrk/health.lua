-- wrk script: GET /health, the HTTP ceiling of the same server (same Lua response hook cost as
-- the other scripts, so the load generator does the same work per response).
-- Usage: wrk ... -s bench/wrk/health.lua http://127.0.0.1:PORT
-- Prints one "RESULT ..." line (see common.lua) that bench/http.sh parses.

-- setup, response and done (the RESULT line) come from common.lua next to this file.
package.path = (debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or "") .. "?.lua;" .. package.path
require("common")

local req

function init(args)
  non2xx = 0
  req = wrk.format("GET", "/health")
end

function request()
  return req
end
