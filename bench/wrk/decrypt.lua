-- wrk script: POST /secrets/{id}/decrypt with {"reason":"bench"}, cycling over seeded ids.
-- Usage: wrk ... -s bench/wrk/decrypt.lua http://127.0.0.1:PORT -- <ids-file>
-- The ids file holds one secret id per line. Each thread starts at a different offset.
-- Prints one "RESULT ..." line (see done) that bench/http.sh parses.

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local reqs, n, i

function init(args)
  non2xx = 0
  local f = assert(io.open(args[1], "r"), "cannot open ids file " .. tostring(args[1]))
  local headers = { ["Content-Type"] = "application/json" }
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

function response(status, hdrs, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), bad,
    e.connect, e.read, e.write, e.timeout))
end
