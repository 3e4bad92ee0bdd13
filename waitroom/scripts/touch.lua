-- touch.lua: a node's batch of "seen now" marks.
--
-- ARGV[1] now, unix ms   ARGV[2] session ms   ARGV[3] n, the number of waiting places
-- ARGV[4 .. 3+n]  waiting places: alive ones (seen within session) are marked now
-- ARGV[4+n ..]    admitted places: marked now if still active (never re-added)
--
-- Returns the waiting places that are not in line any more (given up or admitted), so
-- the node stops answering them from memory.
local now, nw = ARGV[1], tonumber(ARGV[3])
local cut = tonumber(now) - tonumber(ARGV[2])
local gone = {}
for i = 4, 3 + nw do
  local s = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[i]))
  if s and s >= cut then
    redis.call('ZADD', KEYS[3], now, ARGV[i])
  else
    gone[#gone + 1] = tonumber(ARGV[i])
  end
end
for i = 4 + nw, #ARGV do
  redis.call('ZADD', KEYS[4], 'XX', now, ARGV[i])
end
return gone
