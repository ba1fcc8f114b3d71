-- wrk script: POST a mix of AdmissionReviews round-robin over keep-alive connections, as
-- kube-apiserver does, and print one JSON line at the end.
--   wrk -t1 -c16 -d10s --latency -s bench/wrk-mix.lua https://127.0.0.1:8443/validate -- FILE...
local bodies = {}
local requests = {}
local i = 0

function init(args)
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
  assert(#bodies > 0, "no AdmissionReview files given after --")
  for n, body in ipairs(bodies) do
    requests[n] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"throughput_rps":%.1f,"errors":%d,"non2xx":%d,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
