-- Record one member's decisions atomically (round trip 2).
-- KEYS[1] decision state, KEYS[2] outbox (hash)
-- ARGV[1] ttl_ms, ARGV[2] decision state bytes, ARGV[3..] outbox id, payload, id, payload…
-- Returns the number of outbox entries now pending for the member.
local ttl = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
if #ARGV > 2 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 3))
end
local pending = redis.call('HLEN', KEYS[2])
if pending > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return pending
