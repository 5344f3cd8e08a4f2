-- wrk script: OpenBao KV v2 read, GET /v1/secret/data/<prefix>-<i>, cycling over the seeded keys
-- i = 1..count (each thread starts at a different offset), like decrypt.lua over its ids.
-- Usage: BAO_BENCH_TOKEN=<token> wrk ... -s bench/wrk/bao_read.lua http://127.0.0.1:PORT -- <prefix> <count>
-- The token goes in X-Vault-Token; it comes from the environment so that it is never printed.
-- Prints one "RESULT ..." line (see common.lua) that bench/peers.sh parses.

-- setup, response and done (the RESULT line) come from common.lua next to this file.
package.path = (debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or "") .. "?.lua;" .. package.path
require("common")

local reqs, n, i

function init(args)
  non2xx = 0
  local token = assert(os.getenv("BAO_BENCH_TOKEN"), "BAO_BENCH_TOKEN is not set")
  local prefix = assert(args[1], "no key prefix")
  n = assert(tonumber(args[2]), "no key count")
  assert(n > 0, "no keys")
  local headers = { ["X-Vault-Token"] = token }
  reqs = {}
  for k = 1, n do
    reqs[k] = wrk.format("GET", "/v1/secret/data/" .. prefix .. "-" .. k, headers)
  end
  -- Spread the threads over the keys.
  i = (tid * 7919) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end
