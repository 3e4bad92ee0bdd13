-- tick.lua: one admission step of the leader (tickQuery in store.go), atomic: a leader
-- that dies mid-tick either applied all of it or nothing.
--
-- ARGV[1] node   ARGV[2] lease ms   ARGV[3] now, unix ms   ARGV[4] session ms
-- ARGV[5] budget (users to admit at most)   ARGV[6] max active ("0": no cap)
-- ARGV[7] places to pass at most   ARGV[8] entries to clean at most
-- ARGV[9] the rate in force   ARGV[10] its reason   ARGV[11] idle ttl ms
--
-- Returns {0} when ARGV[1] does not hold the lease (nothing changed), else
-- {1, paused (0/1), admitted now, serving, active}.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {0}
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local now, cut = ARGV[3], tonumber(ARGV[3]) - tonumber(ARGV[4])
local clean = tonumber(ARGV[8])
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. fmt(cut), 'LIMIT', 0, clean)
for _, p in ipairs(old) do
  forget(p)
end
old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. fmt(cut), 'LIMIT', 0, clean)
for _, p in ipairs(old) do
  forget(p)
end
redis.call('HSET', KEYS[1], 'inforce', ARGV[9], 'reason', ARGV[10])
local st = redis.call('HMGET', KEYS[1], 'paused', 'serving', 'tail')
local paused = st[1] == '1'
local serving, tail = tonumber(st[2]) or 0, tonumber(st[3]) or 0
local active = redis.call('ZCARD', KEYS[4])
local admitted = 0
if not paused then
  local budget, maxa, scan = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  if maxa > 0 and maxa - active < budget then
    budget = maxa - active
  end
  local scanned = 0
  while admitted < budget and serving < tail and scanned < scan do
    serving = serving + 1
    scanned = scanned + 1
    local p = fmt(serving)
    local s = tonumber(redis.call('ZSCORE', KEYS[3], p))
    if s and s >= cut then
      redis.call('ZREM', KEYS[3], p)
      local ip = owner_of(p)
      if ip then
        leave_ip(ip)
      end
      redis.call('ZADD', KEYS[4], now, p)
      admitted = admitted + 1
    else
      forget(p) -- given up: skipped
    end
  end
  if scanned > 0 then
    redis.call('HSET', KEYS[1], 'serving', fmt(serving))
  end
  if admitted > 0 then
    redis.call('HINCRBY', KEYS[1], 'admitted', admitted)
  end
end
keep(ARGV[11])
return {1, paused and 1 or 0, admitted, serving, active + admitted}
