-- Apply one member's events of a micro-batch atomically (round trip 1).
--
-- KEYS[1] state (msgpack), KEYS[2] decision state (opaque bytes), KEYS[3] outbox (hash)
-- ARGV[1] msgpack: {member, ttl_ms, L, lateness_ms, gap_ms, exclusion_days, max_recent,
--                   delivered_ids, events}
--   each event: {source, offset, ts, id_hash, item, type_index(0-based), cents(-1 = none),
--                quantity, category("" = none), day, month}
-- Returns {state_blob, decision_blob | false, pending {id, payload, ...}, statuses}
--   statuses: one char per event: a = applied, o = duplicate by offset,
--             i = duplicate by event id, l = too late
-- The stored layout and every rule here mirror models/fold.py; see streams/state.py.

local DAYS_KEPT, MONTHS_KEPT, NTYPES, PURCHASE = 60, 13, 5, 2

local args = cmsgpack.unpack(ARGV[1])
local member, ttl, L, lateness, gap = args[1], args[2], args[3], args[4], args[5]
local exclusion_days, max_recent = args[6], args[7]

local function new_clusters() return {0, 0, 0, 0, {}} end

local st
local raw = redis.call('GET', KEYS[1])
if raw then
  st = cmsgpack.unpack(raw)
  if st[2] ~= member then
    return redis.error_reply('state key ' .. KEYS[1] .. ' holds another member')
  end
  -- recent events are stored with delta-encoded timestamps
  local ts = 0
  for i = 1, #st[5] do ts = ts + st[5][i][1]; st[5][i][1] = ts end
else
  st = {1, member, false, false, {}, {}, {}, {0, 0, 0, 0, 0}, 0, 0,
        new_clusters(), new_clusters(), {}, {}, 0, 0}
end

local function before(a_ts, a_h, b_ts, b_h)
  return a_ts < b_ts or (a_ts == b_ts and a_h < b_h)
end

local function insert_recent(ev)
  local list = st[5]
  local pos = #list + 1
  while pos > 1 and before(ev[1], ev[2], list[pos - 1][1], list[pos - 1][2]) do
    pos = pos - 1
  end
  table.insert(list, pos, ev)
  if #list > L then table.remove(list, 1) end
end

local function seen_id(h)
  for _, ev in ipairs(st[5]) do if ev[2] == h then return true end end
  return false
end

local function add_day(day, t)
  local days = st[6]
  local pos = #days
  while pos >= 1 and days[pos][1] > day do pos = pos - 1 end
  if pos >= 1 and days[pos][1] == day then
    days[pos][t + 2] = days[pos][t + 2] + 1
  else
    local bucket = {day, 0, 0, 0, 0, 0}
    bucket[t + 2] = 1
    table.insert(days, pos + 1, bucket)
  end
end

local function add_month(month, cents)
  local months = st[7]
  local pos = #months
  while pos >= 1 and months[pos][1] > month do pos = pos - 1 end
  if pos >= 1 and months[pos][1] == month then
    months[pos][2] = months[pos][2] + 1
    months[pos][3] = months[pos][3] + cents
  else
    table.insert(months, pos + 1, {month, 1, cents})
  end
end

-- Single-linkage clusters of times with gaps <= gap: open intervals {s, e} sorted by s.
local function add_time(cl, ts)
  local open = cl[5]
  local first, last = nil, nil
  for i, iv in ipairs(open) do
    if ts >= iv[1] - gap and ts <= iv[2] + gap then
      if not first then first = i end
      last = i
    end
  end
  if not first then
    local pos = #open + 1
    while pos > 1 and open[pos - 1][1] > ts do pos = pos - 1 end
    table.insert(open, pos, {ts, ts})
    return
  end
  local s = math.min(open[first][1], ts)
  local e = math.max(open[last][2], ts)
  for _ = first + 1, last do table.remove(open, first + 1) end
  open[first] = {s, e}
end

-- Intervals no admissible event can reach any more move into the closed summary.
local function close_clusters(cl, horizon)
  local open = cl[5]
  while #open > 0 and open[1][2] + gap < horizon do
    local s = open[1][1]
    if cl[1] == 0 then cl[2] = s end
    cl[4] = cl[3]
    cl[3] = s
    cl[1] = cl[1] + 1
    table.remove(open, 1)
  end
end

local function add_recent_purchase(item, ts)
  local list = st[13]
  for i, entry in ipairs(list) do
    if entry[1] == item then
      if entry[2] >= ts then return end
      table.remove(list, i)
      break
    end
  end
  local pos = #list + 1
  while pos > 1 and (list[pos - 1][2] < ts or (list[pos - 1][2] == ts and list[pos - 1][1] > item)) do
    pos = pos - 1
  end
  table.insert(list, pos, {item, ts})
  while #list > max_recent do table.remove(list) end
end

local statuses = {}
for _, e in ipairs(args[9]) do
  local source, offset, ts, h = e[1], e[2], e[3], e[4]
  local t, cents, qty, day, month = e[6], e[7], e[8], e[10], e[11]
  local applied_offset = st[14][source]
  local status = 'a'
  if applied_offset and offset <= applied_offset then
    status = 'o'
  elseif seen_id(h) then
    status = 'i'
  elseif st[3] and ts < st[3] - lateness then
    status = 'l'
  end
  if status ~= 'o' then st[14][source] = offset end
  if status == 'a' then
    insert_recent({ts, h, e[5], t, cents, qty, e[9]})
    add_day(day, t)
    if not st[3] or ts > st[3] then st[3] = ts end
    if not st[4] or ts < st[4] then st[4] = ts end
    if day > st[15] then st[15] = day end
    if month > st[16] then st[16] = month end
    if ts > st[8][t + 1] then st[8][t + 1] = ts end
    add_time(st[11], ts)
    if t == PURCHASE then
      local spend = 0
      if cents >= 0 then spend = cents * qty end
      st[9] = st[9] + 1
      st[10] = st[10] + spend
      add_month(month, spend)
      add_time(st[12], ts)
      add_recent_purchase(e[5], ts)
    end
  end
  statuses[#statuses + 1] = status
end

-- Drop what no window can read any more (relative to the member's latest day / month).
while #st[6] > 0 and st[6][1][1] <= st[15] - DAYS_KEPT do table.remove(st[6], 1) end
while #st[7] > 0 and st[7][1][1] <= st[16] - MONTHS_KEPT do table.remove(st[7], 1) end
local first_day = st[15] - exclusion_days + 1
local kept = {}
for _, entry in ipairs(st[13]) do
  if math.floor(entry[2] / 86400000) >= first_day then kept[#kept + 1] = entry end
end
st[13] = kept
if st[3] then
  close_clusters(st[11], st[3] - lateness)
  close_clusters(st[12], st[3] - lateness)
end

-- Store with delta-encoded timestamps (smaller), return the same bytes.
local previous = 0
for i = 1, #st[5] do
  local ts = st[5][i][1]
  st[5][i][1] = ts - previous
  previous = ts
end
local blob = cmsgpack.pack(st)
redis.call('SET', KEYS[1], blob, 'PX', ttl)

local delivered = args[8]
if #delivered > 0 then redis.call('HDEL', KEYS[3], unpack(delivered)) end
local pending = redis.call('HGETALL', KEYS[3])
if #pending > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
local decision = redis.call('GET', KEYS[2])
if decision then redis.call('PEXPIRE', KEYS[2], ttl) end
return {blob, decision, pending, table.concat(statuses)}
