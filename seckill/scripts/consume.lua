-- consume.lua: mark a holder's token used by an order, once.
--
-- KEYS[1]  sk:{item}:holders  hash: user -> "<state>:<expiry ms>:<token>"
-- KEYS[2]  sk:{item}:expiry   sorted set: user -> expiry ms of unused tokens
-- ARGV[1]  user
-- ARGV[2]  token
--
-- Returns 1 consumed now; 2 already used; 0 the user does not hold exactly this token.
-- A used token leaves the expiry set, so it is never reclaimed or released.
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then
  return 0
end
local state, expiry, token = string.match(held, '^(%d):(%d+):(.+)$')
if token ~= ARGV[2] then
  return 0
end
if state == '1' then
  return 2
end
redis.call('HSET', KEYS[1], ARGV[1], '1:' .. expiry .. ':' .. token)
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
