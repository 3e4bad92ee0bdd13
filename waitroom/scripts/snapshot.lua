-- snapshot.lua: the room's counters, read-only.
--
-- Returns {tail, serving, admitted, paused, rate, inforce, reason, seed, drawn,
-- active, waiting, pre-queue}, every value a string.
local st = redis.call('HMGET', KEYS[1], 'tail', 'serving', 'admitted', 'paused', 'rate', 'inforce', 'reason', 'seed', 'drawn')
local out = {}
for i = 1, 9 do
  out[i] = st[i] or ''
end
out[10] = tostring(redis.call('ZCARD', KEYS[4]))
out[11] = tostring(redis.call('ZCARD', KEYS[3]))
out[12] = tostring(redis.call('ZCARD', KEYS[8]) + redis.call('ZCARD', KEYS[9]))
return out
