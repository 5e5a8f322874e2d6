-- pace.lua: a wrk script that makes each connection wait between a
-- response and its next request, PACE milliseconds on average (the first
-- script argument, after "--"; fractions allowed: wrk's timers count
-- whole milliseconds, so PACE=0.5 waits 1 ms after every other response).
-- wrk's latency figures leave the wait out, so they show how fast the
-- server answers at the load this offers (about connections / (PACE +
-- latency) requests per second) instead of at the most it can do.
-- get.sh uses it when PACE is set.
local pace, owed = 1, 0
function init(args)
  if args[1] then pace = tonumber(args[1]) end
end
function delay()
  owed = owed + pace
  local ms = math.floor(owed)
  owed = owed - ms
  return ms
end
