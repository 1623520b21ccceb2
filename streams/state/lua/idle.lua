-- Members of one partition whose idle check is due by `now`, with their stored state.
-- Standalone Redis only (reads member keys it is not given; on a Cluster the state layer
-- fetches them in a second step instead).
-- KEYS[1] idle zset of the partition (member = key tag, score = next check, event time)
-- ARGV[1] now, ARGV[2] limit, ARGV[3] key prefix
-- Returns flat {tag, state_blob | false, decision_blob | false, ...}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, tag in ipairs(due) do
  local base = ARGV[3] .. ':{' .. tag .. '}:'
  local state, decision, framed = split_value(redis.call('GET', base .. 's'))
  if not framed then decision = redis.call('GET', base .. 'd') end  -- layout 4 and older
  out[#out + 1] = tag
  out[#out + 1] = state ~= '' and state
  out[#out + 1] = decision
end
return out
