-- POST one JSON body to the URL wrk was given, then report the run as one JSON line.
-- The body file and the API key come from the environment (BENCH_BODY, BENCH_API_KEY) so that
-- nothing secret lands on wrk's command line, where `ps` would show it.

local function read_all(path)
  local handle = assert(io.open(path, "rb"))
  local data = handle:read("*a")
  handle:close()
  return data
end

wrk.method = "POST"
wrk.body = read_all(assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set"))
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = assert(os.getenv("BENCH_API_KEY"), "BENCH_API_KEY is not set")

-- wrk's text summary rounds and switches units; bench.loadgen parses this line instead.
-- Latencies are in microseconds; errors.status counts responses with a status above 399.
function done(summary, latency, requests)
  local percentiles = {}
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    percentiles[#percentiles + 1] = string.format('"%s": %.0f', tostring(p), latency:percentile(p))
  end
  -- And the quantile function on a grid of 1,000 points (0.1 % … 100 %): slices of one
  -- scenario measured apart are merged into one latency distribution from these.
  local grid = {}
  for k = 1, 1000 do
    grid[k] = string.format("%.0f", latency:percentile(k / 10))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"min": %.0f, "max": %.0f, "mean": %.3f, "stdev": %.3f, "percentiles": {%s}, ' ..
    '"grid": [%s]}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, table.concat(percentiles, ", "),
    table.concat(grid, ",")))
end
