-- wrk script of bench/http/run.sh: POST /counter, with or without a
-- session.
--
--   BENCH_MODE=update  each request carries a session's cookie: a pool of
--                      cookies per thread, as many as the thread's
--                      connections, none of them in two requests at once
--   BENCH_MODE=create  no cookie: every request creates a session
--   BENCH_TARGETS="ip:port ip:port"  optional: thread i connects to
--                      target i mod n instead of the URL's host (direct
--                      to the workers, each thread and its sessions
--                      sticking to one)
--
-- wrk's request() and response() run per thread and do not say which
-- connection or request a response belongs to. The servers therefore
-- echo the request's Cookie header in X-Bench-Cookie: response() puts
-- that cookie (or a new one from Set-Cookie) back into the thread's free
-- pool, and request() takes one out. wrk writes a connection's next
-- request only after the response() of its last one, so with one cookie
-- per connection the pool is never empty once the sessions exist; until
-- then a request without a cookie makes a new session.

local mode = os.getenv("BENCH_MODE") or "update"
local targets = {}
for t in string.gmatch(os.getenv("BENCH_TARGETS") or "", "%S+") do
  targets[#targets + 1] = t
end

local threads = {}
function setup(thread)
  if #targets > 0 then
    local host, port = string.match(targets[#threads % #targets + 1], "^(.*):(%d+)$")
    thread.addr = wrk.lookup(host, port)[1]
  end
  threads[#threads + 1] = thread
end

local fresh -- a POST without a cookie
local free = {}
fresh_sent = 0 -- requests without a cookie (global: done() reads it)

function init(args)
  fresh = wrk.format("POST", "/counter", { ["Content-Length"] = "0" })
end

if mode == "create" then
  function request()
    return fresh
  end
else
  function request()
    local c = table.remove(free)
    if c == nil then
      fresh_sent = fresh_sent + 1
      return fresh
    end
    return wrk.format("POST", "/counter", { ["Cookie"] = c, ["Content-Length"] = "0" })
  end

  function response(status, headers, body)
    local c = headers["X-Bench-Cookie"]
    local set = headers["Set-Cookie"]
    if set ~= nil then
      c = string.match(set, "^([^;]+)")
    end
    if c ~= nil and c ~= "" then
      free[#free + 1] = c
    end
  end
end

-- done prints how many sessions the update mode made: one per connection
-- when every request found its session.
function done(summary, latency, requests)
  if mode ~= "create" then
    local n = 0
    for _, t in ipairs(threads) do
      n = n + t:get("fresh_sent")
    end
    io.write(string.format("wrk.lua: requests without a cookie: %d\n", n))
  end
end
