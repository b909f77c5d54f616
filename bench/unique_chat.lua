-- wrk script: POST /v1/chat/completions with a unique prompt on every request, so no cache could
-- ever answer one. Used by bench/overhead.py:
--
--   wrk -t1 -c50 -d10s -s bench/unique_chat.lua http://127.0.0.1:PORT -- [stream|plain] [API_KEY] \
--       [unique|same] [PROMPT]
--
-- `same` sends one prompt on every request instead (bench/compare.py's exact-cache-hit and
-- approved-answer runs): PROMPT, else a question that names no order (the cache bypasses
-- personalised requests by default). PROMPT must not contain a double quote or backslash.
-- done() prints one line `WRK_JSON {...}`: requests, errors, rps and latency percentiles (ms).

local threads = {}
local counter = 0
local prefix = ""
local stream = false
local same = false
local same_text = ""
local headers = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  stream = args[1] == "stream"
  same = args[3] == "same"
  same_text = args[4] or "What are your opening hours on weekends?"
  local key = args[2] or "sk-bench"
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }
  math.randomseed(os.time() + (tid or 0))
  prefix = string.format("%d-%d-%d", tid or 0, os.time(), math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  local text = same and same_text
    or ('Where is my parcel? Order ' .. prefix .. '-' .. counter .. ', please check.')
  local body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":'
    .. '"' .. text .. '"}]'
    .. (stream and ',"stream":true' or '') .. '}'
  return wrk.format("POST", "/v1/chat/completions", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRK_JSON {"loadgen":"wrk","requests":%d,"duration_s":%.6f,"rps":%.3f,'
      .. '"errors":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
      .. '"timeouts":%d,"latency_ms":{"p50":%.4f,"p90":%.4f,"p99":%.4f,"mean":%.4f,"max":%.4f}}\n',
    summary.requests, secs, summary.requests / secs,
    e.connect + e.read + e.write + e.timeout, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000, latency.max / 1000))
end
