-- abort.lua: release a claim without recording, only if it is still this claim in flight.
--
-- KEYS[1]  the entry, as in begin.lua
-- ARGV[1]  fingerprint, 16 bytes
-- ARGV[2]  claim token, 8 bytes
--
-- Returns 1 released; 0 nothing to release (the entry is gone, completed, or belongs to
-- another claim after this one's lease ran out): a late or repeated abort never removes
-- someone else's claim or a record.
local v = redis.call('GET', KEYS[1])
if v and v == 'p' .. ARGV[1] .. ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
