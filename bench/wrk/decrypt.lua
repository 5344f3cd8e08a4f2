-- wrk script: POST /secrets/{id}/decrypt with {"reason":"bench"}, cycling over seeded ids.
-- Usage: wrk ... -s bench/wrk/decrypt.lua http://127.0.0.1:PORT -- <ids-file>
-- The ids file holds one secret id per line. Each thread starts at a different offset.
-- Prints one "RESULT ..." line (see common.lua) that bench/http.sh parses.

-- setup, response and done (the RESULT line) come from common.lua next to this file.
package.path = (debug.getinfo(1, "S").source:match("^@(.-)[^/]*$") or "") .. "?.lua;" .. package.path
require("common")

local reqs, n, i

function init(args)
  non2xx = 0
  local f = assert(io.open(args[1], "r"), "cannot open ids file " .. tostring(args[1]))
  local headers = with_auth({ ["Content-Type"] = "application/json" })
  reqs = {}
  for id in f:lines() do
    if id ~= "" then
      reqs[#reqs + 1] = wrk.format("POST", "/secrets/" .. id .. "/decrypt", headers,
        '{"reason":"bench"}')
    end
  end
  f:close()
  n = #reqs
  assert(n > 0, "no ids in " .. args[1])
  -- Spread the threads over the id list.
  i = (tid * 7919) % n
end

function request()
  i = i % n + 1
  return reqs[i]
end
