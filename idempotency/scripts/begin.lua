-- begin.lua: claim an idempotency key, or report what holds it. One atomic step.
--
-- KEYS[1]  idem:{tag}:<len(scope)>:<scope><key>  string, the entry (see doc.go):
--            byte 1       state: 'p' in flight (a claim), 'c' completed (a record)
--            bytes 2..17  fingerprint of the request
--            bytes 18..25 claim token
--            bytes 26..   the record (completed entries only)
--          its TTL is the claim's lease while in flight, the record's ttl once completed
-- ARGV[1]  fingerprint, 16 bytes
-- ARGV[2]  new claim token, 8 bytes (made by the caller: scripts make no randomness)
-- ARGV[3]  lease, milliseconds > 0
--
-- Returns {1} started: the key was free and is now claimed with ARGV[2] for ARGV[3] ms;
--         {2} in progress: claimed by a request with the same fingerprint;
--         {3} reused: the entry has another fingerprint;
--         {4, record} replay: completed with the same fingerprint.
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'p' .. ARGV[1] .. ARGV[2], 'PX', ARGV[3])
  return {1}
end
if string.sub(v, 2, 17) ~= ARGV[1] then
  return {3}
end
if string.sub(v, 1, 1) == 'c' then
  return {4, string.sub(v, 26)}
end
return {2}
