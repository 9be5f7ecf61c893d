-- wrk script: POST /pixel/events with unique event ids; BATCH events per request.
-- Set by bench/pixel.sh through the environment: PIXEL, BATCH, and RUN, which keeps the
-- ids of successive runs against one store apart.
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  pixel = os.getenv("PIXEL")
  batch = tonumber(os.getenv("BATCH") or "1")
  counter = 0
  run = os.getenv("RUN") or ""
end
function request()
  local events = {}
  for i = 1, batch do
    counter = counter + 1
    events[i] = string.format(
      '{"event":"AddToCart","event_id":"%st%s-%d","user":{"email":"Shopper%d@Example.com","phone":"+1 213 373 %04d"},"page":{"url":"https://shop.example/p?ttclid=abc"},"properties":{"value":9.5,"currency":"USD"}}',
      run, tid, counter, counter % 1000, counter % 10000)
  end
  local body = '{"events":[' .. table.concat(events, ",") .. ']}'
  return wrk.format("POST", "/pixel/events?pixel=" .. pixel, {["Content-Type"] = "text/plain"}, body)
end
