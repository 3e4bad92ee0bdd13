-- release.lua: return the unit of a holder who has not ordered, once.
--
-- KEYS[1]  sk:{item}:stock    string: units left
-- KEYS[2]  sk:{item}:holders  hash: user -> "<state>:<expiry ms>:<token>"
-- KEYS[3]  sk:{item}:expiry   sorted set: user -> expiry ms of unused tokens
-- ARGV[1]  user
--
-- Returns 1 when the unit went back to stock; 0 when the user holds nothing (never did,
-- already released or reclaimed) or already ordered, or the sale is gone. Conditional on the
-- holder record it deletes, so running it twice cannot inflate the stock.
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held or string.sub(held, 1, 1) ~= '0' then
  return 0
end
if not redis.call('GET', KEYS[1]) then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[1])
return 1
