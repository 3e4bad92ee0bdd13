-- join.lua: find or make one user's place (joinQuery in store.go).
--
-- ARGV[1] identity ("" for a user known by place cookie alone, or a newcomer)
-- ARGV[2] the place of that cookie ("0": none)
-- ARGV[3] client address ("" unknown)
-- ARGV[4] now, unix ms   ARGV[5] session ms   ARGV[6] opens_at ms ("0": no pre-queue)
-- ARGV[7] max places per address ("0": no bound)   ARGV[8] idle ttl ms
--
-- Returns {status, place, serving}: status 1 waiting, 2 admitted, 3 pre-queue (place is
-- -ticket), 4 too many places for the address.
local id, ip = ARGV[1], ARGV[3]
local now, session, opens, maxip = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local st = redis.call('HMGET', KEYS[1], 'serving', 'drawn')
local serving = tonumber(st[1]) or 0
local drawn = tonumber(st[2]) or 0
local cut = now - session
local p = false
if id ~= '' then
  p = redis.call('HGET', KEYS[6], id)
elseif ARGV[2] ~= '0' then
  p = ARGV[2]
end
if p then
  local n = tonumber(p)
  if n < 0 then
    if redis.call('HEXISTS', KEYS[5], p) == 1 then
      return {3, n, serving}
    end
  elseif n > serving then
    local s = tonumber(redis.call('ZSCORE', KEYS[3], p))
    if s and s >= cut then
      redis.call('ZADD', KEYS[3], now, p)
      return {1, n, serving}
    end
  else
    local s = tonumber(redis.call('ZSCORE', KEYS[4], p))
    if s and s >= cut then
      redis.call('ZADD', KEYS[4], now, p)
      return {2, n, serving}
    end
  end
  forget(p) -- given up, or expired: join again at the end
end
if maxip > 0 and ip ~= '' and (tonumber(redis.call('HGET', KEYS[7], ip)) or 0) >= maxip then
  return {4, 0, serving}
end
if ip ~= '' then
  redis.call('HINCRBY', KEYS[7], ip, 1)
end
if opens > 0 and drawn ~= opens then
  local seq = redis.call('HINCRBY', KEYS[1], 'preseq', 1)
  if id == '' then
    id = 't' .. fmt(seq)
  end
  local t = fmt(-seq)
  redis.call('HSET', KEYS[6], id, t)
  redis.call('HSET', KEYS[5], t, ip .. '\n' .. id)
  if now < opens then
    redis.call('ZADD', KEYS[8], seq, id)
  else
    redis.call('ZADD', KEYS[9], seq, id)
  end
  keep(ARGV[8])
  return {3, -seq, serving}
end
local n = redis.call('HINCRBY', KEYS[1], 'tail', 1)
p = fmt(n)
redis.call('ZADD', KEYS[3], now, p)
redis.call('HSET', KEYS[5], p, ip .. '\n' .. id)
if id ~= '' then
  redis.call('HSET', KEYS[6], id, p)
end
keep(ARGV[8])
return {1, n, serving}
