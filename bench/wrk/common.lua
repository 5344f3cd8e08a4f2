-- Shared by the wrk scripts here (loaded with require, see their first lines): numbers the
-- threads (global `tid` in each thread), counts non-2xx responses per thread (each script's init
-- sets `non2xx = 0`) and prints the one "RESULT ..." line that bench/http.sh,
-- bench/rewrap.sh and bench/peers.sh parse.

-- With RCRT_BENCH_TOKEN set (a service token), every request carries it as a bearer token.
local bench_token = os.getenv("RCRT_BENCH_TOKEN")

-- Adds the Authorization header to `headers` when RCRT_BENCH_TOKEN is set; returns `headers`.
function with_auth(headers)
  if bench_token ~= nil and bench_token ~= "" then
    headers["Authorization"] = "Bearer " .. bench_token
  end
  return headers
end

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
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
