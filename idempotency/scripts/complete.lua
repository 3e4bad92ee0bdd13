-- complete.lua: record the answer of a claim.
--
-- KEYS[1]  the entry, as in begin.lua
-- ARGV[1]  fingerprint, 16 bytes
-- ARGV[2]  claim token, 8 bytes
-- ARGV[3]  the record
-- ARGV[4]  ttl of the record, milliseconds > 0
--
-- Returns 1 recorded: the entry was this claim in flight, or was gone (the lease ran out and
--           nobody took the key: the request did take effect, so it is recorded anyway);
--         2 already recorded by this claim (nothing changed);
--         0 claim lost: the entry belongs to another claim or record (nothing changed).
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 18, 25) ~= ARGV[2] then
    return 0
  end
  if string.sub(v, 1, 1) == 'c' then
    return 2
  end
end
redis.call('SET', KEYS[1], 'c' .. ARGV[1] .. ARGV[2] .. ARGV[3], 'PX', ARGV[4])
return 1
