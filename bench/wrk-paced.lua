-- wrk script: bench/wrk-mix.lua, with each connection waiting a random 0..2×PACE_MS after each
-- answer (wrk's delay()), so that the connections do not fire in step: a rate of about
-- connections × 1000 / PACE_MS requests per second, arriving at random moments. An independent
-- check of the open-loop latency `regate bench load --rate` measures with evenly spaced requests.
-- Run from the repository's root:
--   PACE_MS=8 wrk -t1 -c8 -d10s -s bench/wrk-paced.lua https://127.0.0.1:8443/validate -- fixtures/bench/*.json
dofile("bench/wrk-mix.lua")
local pace = tonumber(os.getenv("PACE_MS") or "0")

function delay()
  return math.random(0, 2 * pace)
end
