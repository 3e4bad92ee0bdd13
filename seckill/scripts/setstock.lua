-- setstock.lua: start (or restart) the sale of one item.
--
-- KEYS[1]  sk:{item}:stock    string: units left
-- KEYS[2]  sk:{item}:holders  hash: user -> "<state>:<expiry ms>:<token>"
-- KEYS[3]  sk:{item}:expiry   sorted set: user -> expiry ms of unused tokens
-- ARGV[1]  the new stock, an integer >= 0
--
-- Returns 1. Earlier holders and used tokens are forgotten, so their tokens stop working.
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SET', KEYS[1], ARGV[1])
return 1
