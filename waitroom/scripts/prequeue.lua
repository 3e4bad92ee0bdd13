-- prequeue.lua: the pre-queue, read-only.
--
-- Returns {drawn ("" if never), early identities, late identities}, each list in arrival order.
return {redis.call('HGET', KEYS[1], 'drawn') or '', redis.call('ZRANGE', KEYS[8], 0, -1), redis.call('ZRANGE', KEYS[9], 0, -1)}
