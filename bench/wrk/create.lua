-- wrk script: POST /secrets with a unique name per request and a ~1 KiB value.
-- Usage: wrk ... -s bench/wrk/create.lua http://127.0.0.1:PORT -- <run-prefix>
-- Names are "<run-prefix>-t<thread>-<counter>": unique per run, per thread and per request.
-- Prints one "RESULT ..." line (see done) that bench/http.sh parses.

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local prefix, counter, value
local headers = { ["Content-Type"] = "application/json" }

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
