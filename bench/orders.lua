-- wrk script: POST /trades with a unique client_order_id per request
-- (wrk ... -s orders.lua URL -- TAG), or GET /hello (wrk ... -s orders.lua URL -- TAG hello).
-- Either way it prints one WRK_JSON line: requests, duration, errors, p50/p99.
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = string.format("bench-%s-%d-%d-", args[1] or "run", tid, os.time())
  hello = args[2] == "hello"
  counter = 0
end

function request()
  if hello then
    return wrk.format("GET", "/hello")
  end
  counter = counter + 1
  local body = string.format(
    '{"client_order_id":"%s%d","symbol":"AAPL","side":"BUY","quantity":1,"limit_price":101.25}',
    prefix, counter)
  return wrk.format("POST", "/trades", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
