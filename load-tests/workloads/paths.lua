-- wrk script: cycles through the request paths in $PATHS_FILE (one per line) and sends the
-- bearer token in $BENCH_TOKEN, so every target and workload uses the same request mix.
local paths = {}
local index = 0

local file = assert(io.open(os.getenv("PATHS_FILE"), "r"))
for line in file:lines() do
  if #line > 0 then paths[#paths + 1] = line end
end
file:close()
assert(#paths > 0, "PATHS_FILE is empty")

wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end

-- wrk prints non-2xx counts itself; print a machine-readable line for the run script too.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_SUMMARY requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout))
end
