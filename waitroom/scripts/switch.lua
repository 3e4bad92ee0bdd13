-- switch.lua: set (ARGV[2] not empty) or clear a shared switch of the room.
--
-- ARGV[1] field of wr:{room}:state ('paused' or 'rate')   ARGV[2] value   ARGV[3] idle ttl ms
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
