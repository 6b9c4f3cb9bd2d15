-- wrk script for bench/ingest.py (run by bench/_load.py). Each wrk thread loads every n-th line
-- ("sha256=<hex> <body>") of the body file, pre-formats the requests once and cycles through
-- them; `done` prints one machine-readable line with exact percentiles (wrk's histogram,
-- microseconds). Arguments after `--`: the body file, the number of threads, the URL path.
local thread_count = 0
local threads = {}

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads, url_path = args[1], tonumber(args[2]), args[3]
  requests = {}
  nreq, idx, wrapped = 0, 0, 0
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local sp = line:find(" ", 1, true)
      nreq = nreq + 1
      requests[nreq] = wrk.format("POST", url_path, {
        ["Content-Type"] = "application/json",
        ["X-Doitong-Signature"] = line:sub(1, sp - 1),
      }, line:sub(sp + 1))
    end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  if idx > nreq then
    idx = 1
    wrapped = wrapped + 1
  end
  return requests[idx]
end

function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f wraps=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, wraps))
end
