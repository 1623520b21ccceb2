-- Reserve or release budget, idempotent per reservation id (one key per budget and day).
-- KEYS[1] budget hash: field "spent" plus one field per reservation id (amount; 0 = none)
-- ARGV[1] "reserve" | "release", ARGV[2] reservation id, ARGV[3] amount, ARGV[4] limit,
-- ARGV[5] ttl_ms
-- Returns {granted (1/0), spent after}
local op, id = ARGV[1], ARGV[2]
if op == 'reserve' and tonumber(ARGV[3]) == 0 then
  -- nothing to take: granted, every time it is asked (stored, its 0 would read as refused)
  return {1, tonumber(redis.call('HGET', KEYS[1], 'spent') or 0)}
end
local previous = redis.call('HGET', KEYS[1], id)
if op == 'reserve' then
  if previous then
    return {tonumber(previous) > 0 and 1 or 0, tonumber(redis.call('HGET', KEYS[1], 'spent') or 0)}
  end
  local amount, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or 0)
  local granted = 0
  if spent + amount <= limit then
    spent = redis.call('HINCRBY', KEYS[1], 'spent', amount)
    granted = 1
    redis.call('HSET', KEYS[1], id, amount)
  else
    redis.call('HSET', KEYS[1], id, 0)
  end
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
  return {granted, spent}
end
-- release: give back what the reservation took, once
if previous and tonumber(previous) > 0 then
  redis.call('HINCRBY', KEYS[1], 'spent', -tonumber(previous))
  redis.call('HSET', KEYS[1], id, 0)
end
return {0, tonumber(redis.call('HGET', KEYS[1], 'spent') or 0)}
