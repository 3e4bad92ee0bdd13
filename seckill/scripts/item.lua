-- item.lua: read the state of one sale in one consistent step.
--
-- KEYS[1]  sk:{item}:stock    string: units left
-- KEYS[2]  sk:{item}:holders  hash: user -> "<state>:<expiry ms>:<token>"
--
-- Returns -1 when the sale does not exist, else {stock, number of holders}.
local stock = redis.call('GET', KEYS[1])
if not stock then
  return -1
end
return {tonumber(stock), redis.call('HLEN', KEYS[2])}
