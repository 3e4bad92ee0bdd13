-- release.lua: give the leader lease up, only if ARGV[1] holds it. Returns 1 if released.
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
