-- Record one member's decisions atomically (round trip 2).
-- KEYS[1] state (the decision state lives in its value: value.lua), KEYS[2] the decision
-- state key of layouts 4 and older (deleted once folded in), KEYS[3] outbox (hash)
-- ARGV[1] ttl_ms, ARGV[2] decision state bytes, ARGV[3..] outbox id, payload, id, payload…
-- Returns the number of outbox entries now pending for the member.
local ttl = tonumber(ARGV[1])
if #ARGV[2] > MAX_DECISION then
  return redis.error_reply('decision state of ' .. #ARGV[2] .. ' bytes, at most '
                           .. MAX_DECISION .. ' fit')
end
local value = redis.call('GET', KEYS[1])
local state, _, framed = split_value(value)
redis.call('SET', KEYS[1], join_value(state, ARGV[2]), 'PX', ttl)
if not framed then redis.call('DEL', KEYS[2]) end
if #ARGV > 2 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 3))
end
local pending = redis.call('HLEN', KEYS[3])
if pending > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
return pending
