-- acquire.lua: take or renew the leader lease.
--
-- ARGV[1] node   ARGV[2] lease ms
-- Returns 1 when ARGV[1] holds the lease (for ARGV[2] ms from now), 0 otherwise.
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
