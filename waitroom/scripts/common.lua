-- common.lua: prepended to every script of the waiting room. Every script gets the same
-- nine KEYS, all with the room's hash tag {room}:
--
-- KEYS[1] wr:{room}:state   hash: tail (last place given), serving (the serving counter),
--                           admitted (users admitted), paused ('1'), rate (SetAdmitRate),
--                           inforce and reason (the leader's rate and why), preseq (last
--                           pre-queue ticket), drawn (the opening drawn, unix ms), seed
-- KEYS[2] wr:{room}:lock    string: the node holding the leader lease (SET NX PX)
-- KEYS[3] wr:{room}:seen    zset: waiting place -> last seen, unix ms
-- KEYS[4] wr:{room}:active  zset: admitted place -> last seen, unix ms
-- KEYS[5] wr:{room}:owner   hash: place (or -ticket) -> "<ip>\n<identity>"
-- KEYS[6] wr:{room}:keys    hash: identity ("k"+key, "t"+ticket) -> place, or -ticket
-- KEYS[7] wr:{room}:ips     hash: client address -> places it holds (waiting or pre-queue)
-- KEYS[8] wr:{room}:early   zset: pre-queue identity -> ticket, arrived before the opening
-- KEYS[9] wr:{room}:late    zset: pre-queue identity -> ticket, arrived after it, before the draw
--
-- Places and tickets are decimal strings as string.format('%d') writes them.

local function fmt(n)
  return string.format('%d', n)
end

local function leave_ip(ip)
  if ip ~= '' then
    if redis.call('HINCRBY', KEYS[7], ip, -1) <= 0 then
      redis.call('HDEL', KEYS[7], ip)
    end
  end
end

-- owner_of returns the ip and identity that hold place p, or nil.
local function owner_of(p)
  local o = redis.call('HGET', KEYS[5], p)
  if not o then
    return nil
  end
  local i = string.find(o, '\n', 1, true)
  return string.sub(o, 1, i - 1), string.sub(o, i + 1)
end

-- forget removes every trace of place p (a string).
local function forget(p)
  local ip, id = owner_of(p)
  if ip then
    if id ~= '' and redis.call('HGET', KEYS[6], id) == p then
      redis.call('HDEL', KEYS[6], id)
    end
    redis.call('HDEL', KEYS[5], p)
  end
  if redis.call('ZREM', KEYS[3], p) == 1 and ip then
    leave_ip(ip)
  end
  redis.call('ZREM', KEYS[4], p)
end

-- keep makes the room's keys (not the lease) expire ttl ms after this write.
local function keep(ttl)
  for i = 1, 9 do
    if i ~= 2 then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
