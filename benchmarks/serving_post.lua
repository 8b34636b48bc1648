-- wrk script for benchmarks/serving.py: POST one JSON body and report as one JSON line.
--
--   FERRY_BENCH_BODY=/tmp/body.json wrk -t1 -c32 -d20s --latency \
--       -s benchmarks/serving_post.lua http://127.0.0.1:8080/v2/models/fraud/infer
--
-- Every request sends the same body (read once from FERRY_BENCH_BODY). Responses other than
-- 2xx/3xx are counted in status_errors. Latencies are in microseconds.

local path = assert(os.getenv("FERRY_BENCH_BODY"), "set FERRY_BENCH_BODY to the body file")
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'FERRY_BENCH {"requests": %d, "duration_us": %d, "mean_us": %.1f, "p50_us": %.1f, ' ..
    '"p75_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, "max_us": %.1f, "status_errors": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency.mean, latency:percentile(50),
    latency:percentile(75), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
