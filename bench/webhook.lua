-- wrk script for nightshift's POST /webhook (driven by bench/webhook.sh).
--
-- Environment:
--   BENCH_PAYLOAD  path of the JSON body (default bench/payload-5-alerts.json)
--   BENCH_TOKEN    ingest bearer token; when empty, no Authorization header is sent
--
-- Every request carries the same Alertmanager v4 body. done() prints one machine-readable
-- line starting with "BENCH_RESULT" that bench/webhook.sh parses.

local payload_path = os.getenv("BENCH_PAYLOAD") or "bench/payload-5-alerts.json"
local token = os.getenv("BENCH_TOKEN") or ""

local file = assert(io.open(payload_path, "rb"), "cannot open payload " .. payload_path)
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "Alertmanager/0.28.1"
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- latency:percentile() is in microseconds.
local function ms(us)
  return string.format("%.3f", us / 1000.0)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  -- wrk counts a response as a status error when its status is >= 400; nightshift answers
  -- only 200 or 4xx/5xx on /webhook, so this is the number of non-2xx answers.
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_s=%.3f rps=%.1f p50_ms=%s p90_ms=%s p99_ms=%s p999_ms=%s max_ms=%s mean_ms=%s non2xx=%d socket_errors=%d connect=%d read=%d write=%d timeout=%d bytes=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency:percentile(99.9)), ms(latency.max), ms(latency.mean),
    e.status, socket_errors, e.connect, e.read, e.write, e.timeout, summary.bytes))
  io.write(string.format(
    "latency ms: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s | non-2xx %d | socket errors %d\n",
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency:percentile(99.9)), ms(latency.max), e.status, socket_errors))
end
