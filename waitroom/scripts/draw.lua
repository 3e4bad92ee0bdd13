-- draw.lua: give the pre-queue its places, once per opening (drawQuery in store.go).
--
-- ARGV[1] node   ARGV[2] lease ms   ARGV[3] seed   ARGV[4] now, unix ms
-- ARGV[5] opens_at ms   ARGV[6] n early   ARGV[7] n late   ARGV[8] idle ttl ms
-- ARGV[9 ..] every pre-queue identity: early ones in the drawn order, then late ones
--
-- Returns {1, seed} drawn now; {2, seed} this opening was drawn before (its seed);
-- {3, ''} the pre-queue is not exactly the identities given (list it again);
-- {4, ''} ARGV[1] does not hold the lease. Seeds are strings.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {4, ''}
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local st = redis.call('HMGET', KEYS[1], 'drawn', 'seed')
if st[1] == ARGV[5] then
  return {2, st[2] or ''}
end
local ne, nl = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('ZCARD', KEYS[8]) ~= ne or redis.call('ZCARD', KEYS[9]) ~= nl or #ARGV - 8 ~= ne + nl then
  return {3, ''}
end
for i = 9, #ARGV do
  local t = tonumber(redis.call('HGET', KEYS[6], ARGV[i]))
  if not t or t >= 0 then
    return {3, ''}
  end
end
for i = 9, #ARGV do
  local id = ARGV[i]
  local t = redis.call('HGET', KEYS[6], id)
  local p = fmt(redis.call('HINCRBY', KEYS[1], 'tail', 1))
  redis.call('HSET', KEYS[6], id, p)
  redis.call('HSET', KEYS[5], p, redis.call('HGET', KEYS[5], t))
  redis.call('HDEL', KEYS[5], t)
  redis.call('ZADD', KEYS[3], ARGV[4], p)
end
redis.call('DEL', KEYS[8], KEYS[9])
redis.call('HSET', KEYS[1], 'drawn', ARGV[5], 'seed', ARGV[3])
keep(ARGV[8])
return {1, ARGV[3]}
