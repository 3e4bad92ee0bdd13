-- reclaim.lua: return the units of tokens that expired unused, in a bounded batch.
--
-- KEYS[1]  sk:{item}:stock    string: units left
-- KEYS[2]  sk:{item}:holders  hash: user -> "<state>:<expiry ms>:<token>"
-- KEYS[3]  sk:{item}:expiry   sorted set: user -> expiry ms of unused tokens
-- ARGV[1]  now, unix milliseconds: tokens with expiry <= now are expired
-- ARGV[2]  the most holders to look at in this call
--
-- Returns the number of units returned to stock. Each expired holder is deleted in the same
-- atomic step that returns its unit, so reclaimers racing on several nodes never return a
-- unit twice. Call again while it returns ARGV[2].
local now = tonumber(ARGV[1])
local users = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #users == 0 then
  return 0
end
local stock = redis.call('GET', KEYS[1])
local n = 0
for _, user in ipairs(users) do
  local held = redis.call('HGET', KEYS[2], user)
  local state, expiry
  if held then
    state, expiry = string.match(held, '^(%d):(%d+):')
  end
  if state == '0' and tonumber(expiry) > now then
    -- the set lags the holder record: repair it instead of dropping a live token
    redis.call('ZADD', KEYS[3], expiry, user)
  else
    if state == '0' and stock then
      redis.call('HDEL', KEYS[2], user)
      n = n + 1
    end
    redis.call('ZREM', KEYS[3], user)
  end
end
if n > 0 then
  redis.call('INCRBY', KEYS[1], n)
end
return n
