-- issue.lua: issue tokens to a batch of users of one item, atomically.
--
-- KEYS[1]  sk:{item}:stock    string: units left; its existence means "the sale exists"
-- KEYS[2]  sk:{item}:holders  hash: user -> "<state>:<expiry ms>:<token>", state 0 unused, 1 used
-- KEYS[3]  sk:{item}:expiry   sorted set: user -> expiry ms, for unused tokens only
-- ARGV[1]  now, unix milliseconds (the caller's clock)
-- ARGV[2+3i], ARGV[3+3i], ARGV[4+3i]  user, new token, new token's expiry ms; i = 0..n-1
--
-- Returns -1 when the sale does not exist (nothing changed). Otherwise an array of 3n
-- entries, three per user in ARGV order: code (integer), token, expiry ms (string), where code is
--   1 issued: a unit was taken, the user now holds the new token
--   2 repeat: the user already held a token; token and expiry are the held ones
--   0 sold out: no unit left (token "" and expiry 0)
-- A held token that expired unused returns its unit before the user buys again, so a buyer
-- who let a token lapse is never stuck with a dead one.
local stock = tonumber(redis.call('GET', KEYS[1]))
if not stock then
  return -1
end
local now = tonumber(ARGV[1])
local start = stock
local out = {}
for i = 2, #ARGV, 3 do
  local user, token, expiry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local held = redis.call('HGET', KEYS[2], user)
  if held then
    local state, hexp, htoken = string.match(held, '^(%d):(%d+):(.+)$')
    if state == '0' and tonumber(hexp) <= now then
      redis.call('HDEL', KEYS[2], user)
      redis.call('ZREM', KEYS[3], user)
      stock = stock + 1
      held = false
    else
      out[#out + 1] = 2
      out[#out + 1] = htoken
      out[#out + 1] = hexp
    end
  end
  if not held then
    if stock > 0 then
      stock = stock - 1
      redis.call('HSET', KEYS[2], user, '0:' .. expiry .. ':' .. token)
      redis.call('ZADD', KEYS[3], expiry, user)
      out[#out + 1] = 1
      out[#out + 1] = token
      out[#out + 1] = expiry
    else
      out[#out + 1] = 0
      out[#out + 1] = ''
      out[#out + 1] = '0'
    end
  end
end
if stock ~= start then
  redis.call('SET', KEYS[1], string.format('%d', stock))
end
return out
