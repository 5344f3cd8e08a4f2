-- wrk script: GET /health, the HTTP ceiling of the same server (same Lua response hook cost as
-- the other scripts, so the load generator does the same work per response).
-- Usage: wrk ... -s bench/wrk/health.lua http://127.0.0.1:PORT
-- Prints one "RESULT ..." line (see done) that bench/http.sh parses.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local req

function init(args)
  non2xx = 0
  req = wrk.format("GET", "/health")
end

function request()
  return req
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
