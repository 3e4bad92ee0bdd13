-- gcra.lua: one token bucket (GCRA) of a limit shared by every edge node, in one round trip.
--
-- KEYS[1]  rl:{<route>:<limit>:<key hash>}  string "<tat>|<interval>|<burst>"
-- ARGV[1]  emission interval (1/rate), microseconds, a decimal that may have a fraction
-- ARGV[2]  burst, tokens (a whole number, at least 1)
-- ARGV[3]  max wait, microseconds: take a token that comes within it (0: only at once)
-- ARGV[4]  "t" take a token, "r" give one back (a refund)
--
-- Take returns {1, 0, remaining} when a token was taken at once, {1, wait µs, 0} when one
-- was reserved that comes within the max wait, {0, wait µs, 0} when none was taken and the
-- next one comes in wait µs (at least 1). Refund returns {1, 0, 0}, or {0, 0, 0} when the
-- bucket was full (absent) already.
--
-- The algorithm and its rounding are those of the local store (limiter.Store): tat is the
-- instant the bucket is full again; a token is taken when the new tat is at most now + tau
-- (tau = burst * interval), with 1 ns of tolerance. Times are microseconds since
-- 2024-01-01 from the TIME of this Redis, so the edge nodes' clocks do not matter; as
-- doubles they are exact to about 8 ns until 2030 and to 0.125 µs until 2100. A bucket
-- expires (PX) when it is full again: a missing key is a full bucket.
--
-- The stored value carries the interval and burst it was written with: a bucket written
-- with other ones (a reload changed rate or burst) keeps the tokens it holds, clamped to
-- the new burst, as limiter.Store.Update does.
if redis.replicate_commands then
  redis.replicate_commands() -- Redis 5 and 6: replicate effects, since TIME is not repeatable
end
local iv = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local maxwait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1704067200) * 1000000 + tonumber(t[2])
local tau = iv * burst

local tat = now
local v = redis.call('GET', KEYS[1])
if v then
  local a, b, c = string.match(v, '^([^|]+)|([^|]+)|([^|]+)$')
  local otat, oiv, oburst = tonumber(a), tonumber(b), tonumber(c)
  if otat and oiv and oburst and otat > now then
    if oiv == iv and oburst == burst then
      tat = otat
    else
      -- tokens held: oburst - (otat-now)/oiv, clamped to burst
      local deficit = burst - oburst + (otat - now) / oiv
      if deficit > 0 then
        tat = now + deficit * iv
      end
    end
  end
end

local function store(nt)
  local px = math.ceil((nt - now) / 1000)
  if px < 1 then px = 1 end
  redis.call('SET', KEYS[1], string.format('%.17g|%.17g|%.17g', nt, iv, burst), 'PX', px)
end

if ARGV[4] == 'r' then
  if tat <= now then
    return {0, 0, 0}
  end
  local nt = tat - iv
  if nt > now then
    store(nt)
  else
    redis.call('DEL', KEYS[1])
  end
  return {1, 0, 0}
end

local nt = tat + iv
local excess = nt - now - tau
if excess < 0.001 then
  store(nt)
  return {1, 0, math.floor((tau - (nt - now) + 0.001) / iv)}
end
local wait = math.ceil(excess)
if excess <= maxwait then
  store(nt)
  return {1, wait, 0}
end
return {0, wait, 0}
