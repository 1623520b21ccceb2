-- Apply the events of a micro-batch, member by member (round trip 1).
--
-- KEYS: per member, 3 keys: state (its value also holds the decision state: value.lua),
--   the decision state key of layouts 4 and older (folded in, then deleted), outbox (hash).
-- ARGV[1] msgpack {ttl_ms, L, lateness_ms, gap_ms, exclusion_days, max_recent}
-- ARGV[1 + m] msgpack {member, delivered_ids, events} for the m-th member; each event is
--   {source, offset, ts, id_hash32, item, type_index(0-based), cents(-1 = none),
--    quantity, category("" = none), day, month}
-- Returns, per member, {state_blob | false, decision_blob | false, pending {id, payload,
--   ...}, statuses}; statuses: one char per event: a = applied, o = duplicate by offset,
--   i = duplicate by event id, l = too late.
-- Standalone Redis gets a call per few members (state_members_per_call; apply_stream: one
-- for the whole batch); a script runs atomically, so each member's update is too. A
-- Cluster gets one call per member, routed by its keys.
--
-- Layout: streams/state_codec.py. Columns are binary strings and 0xFF-separated id lists
-- (0xFF never occurs in UTF-8), so the stored msgpack array holds a few dozen values:
-- packing and unpacking hundreds of Lua numbers and tables cost ~80 us of ~120 us per
-- call in the first layouts. Every rule mirrors models/fold.py.

local LAYOUT, DAYS_KEPT, MONTHS_KEPT, NTYPES, PURCHASE = 5, 60, 13, 5, 2
-- A sequence record: id hash u32, then ts * FLAG_UNIT + flags in a u48 (ts < 2^43 ms, the
-- year 2248; exact in a Lua double). Flags: type index (bits 0-2), HAS_PRICE (its unit
-- price is the next entry of the price column, st[20]), HAS_QTY (its quantity, other
-- than 1, is the next entry of the quantity column, st[21]).
local REC, FLAG_UNIT, TYPE_MASK, HAS_PRICE, HAS_QTY = 10, 32, 7, 8, 16
local PRICE_FMT, PRICE_REC, QTY_FMT, QTY_REC = '>i4', 4, '>H', 2  -- cents, quantity
local REC4, REC4_FMT = 17, '>I6I4BHi4'  -- layout 4: ts, id hash, type, quantity, cents
local DAY_REC, MONTH_REC = 12, 12      -- >H day + 5 x >H count; >H month >I4 n >I6 cents
local MAX_COUNT = 65535                -- per member, day and type; the fold saturates too
local SEP = '\255'
local MS_PER_DAY = 86400000

local common = cmsgpack.unpack(ARGV[1])
local ttl, L, lateness, gap = common[1], common[2], common[3], common[4]
local exclusion_days, max_recent = common[5], common[6]

local st  -- the state of the member being applied (the helpers below work on it)

-- 0xFF-separated lists ------------------------------------------------------------------
local function split(list)
  local out, from = {}, 1
  while from <= #list do
    local stop = string.find(list, SEP, from, true)
    out[#out + 1] = string.sub(list, from, stop - 1)
    from = stop + 1
  end
  return out
end

local function join(values)
  if #values == 0 then return '' end
  return table.concat(values, SEP) .. SEP
end

local function drop_first(list)
  return string.sub(list, string.find(list, SEP, 1, true) + 1)
end

-- day buckets (binary, sorted by day) --------------------------------------------------------
local function add_day(day, t)
  local days = st[8]
  local i = #days / DAY_REC
  while i >= 1 and struct.unpack('>H', days, (i - 1) * DAY_REC + 1) > day do i = i - 1 end
  if i >= 1 and struct.unpack('>H', days, (i - 1) * DAY_REC + 1) == day then
    local at = (i - 1) * DAY_REC + 3 + 2 * t
    local count = math.min(struct.unpack('>H', days, at) + 1, MAX_COUNT)
    st[8] = string.sub(days, 1, at - 1) .. struct.pack('>H', count) .. string.sub(days, at + 2)
    return
  end
  local counts = {0, 0, 0, 0, 0}
  counts[t + 1] = 1
  local record = struct.pack('>HHHHHH', day, counts[1], counts[2], counts[3], counts[4], counts[5])
  st[8] = string.sub(days, 1, i * DAY_REC) .. record .. string.sub(days, i * DAY_REC + 1)
end

-- the recent sequence ---------------------------------------------------------------------
local function count_seq() return #st[5] / REC end

local function rec_ts_hash(i)  -- 1-based
  local h, packed = struct.unpack('>I4I6', st[5], (i - 1) * REC + 1)
  return math.floor(packed / FLAG_UNIT), h
end

local function rec_flags(i)
  return struct.unpack('>I6', st[5], (i - 1) * REC + 5) % FLAG_UNIT
end

-- Records before position `pos` that carry `flag`: the index into its sparse column.
local function flagged_before(pos, flag)
  local n = 0
  for i = 1, pos - 1 do
    if bit.band(rec_flags(i), flag) ~= 0 then n = n + 1 end
  end
  return n
end

-- Insert `value` into a sparse column before the entries of records from `pos` on.
local function insert_sparse(column, pos, flag, size, value)
  local cut = flagged_before(pos, flag) * size
  st[column] = string.sub(st[column], 1, cut) .. value .. string.sub(st[column], cut + 1)
end

-- A duplicate carries the same id hash, ts and item as an event still in the sequence.
local function seen(ts, h, item)
  local needle = struct.pack('>I4', h)
  local from = 1
  while true do
    local at = string.find(st[5], needle, from, true)
    if not at then return false end
    if (at - 1) % REC == 0 then
      local i = (at - 1) / REC + 1
      if rec_ts_hash(i) == ts and split(st[6])[i] == item then return true end
    end
    from = at + 1
  end
end

local function insert_event(ts, h, t, qty, cents, item, cat)
  local n = count_seq()
  local pos = n + 1  -- most events are the newest: scan back from the end
  while pos > 1 do
    local pts, ph = rec_ts_hash(pos - 1)
    if pts < ts or (pts == ts and ph <= h) then break end
    pos = pos - 1
  end
  local flags = t
  if cents >= 0 then flags = flags + HAS_PRICE end
  if qty ~= 1 then flags = flags + HAS_QTY end
  local cut = (pos - 1) * REC
  if pos == n + 1 then
    if cents >= 0 then st[20] = st[20] .. struct.pack(PRICE_FMT, cents) end
    if qty ~= 1 then st[21] = st[21] .. struct.pack(QTY_FMT, qty) end
    st[6] = st[6] .. item .. SEP
    st[7] = st[7] .. cat .. SEP
  else
    if cents >= 0 then insert_sparse(20, pos, HAS_PRICE, PRICE_REC, struct.pack(PRICE_FMT, cents)) end
    if qty ~= 1 then insert_sparse(21, pos, HAS_QTY, QTY_REC, struct.pack(QTY_FMT, qty)) end
    local items, cats = split(st[6]), split(st[7])
    table.insert(items, pos, item)
    table.insert(cats, pos, cat)
    st[6], st[7] = join(items), join(cats)
  end
  st[5] = string.sub(st[5], 1, cut) .. struct.pack('>I4I6', h, ts * FLAG_UNIT + flags)
          .. string.sub(st[5], cut + 1)
  -- An event leaving the sequence moves into its day bucket (a loop: L may have shrunk).
  -- Buckets older than any window are pruned after the batch; skip them here.
  while #st[5] > L * REC do
    local _, packed = struct.unpack('>I4I6', st[5], 1)
    local old_flags = packed % FLAG_UNIT
    local old_ts = (packed - old_flags) / FLAG_UNIT
    local old_day = math.floor(old_ts / MS_PER_DAY)
    if old_day > st[18] - DAYS_KEPT then add_day(old_day, bit.band(old_flags, TYPE_MASK)) end
    if bit.band(old_flags, HAS_PRICE) ~= 0 then st[20] = string.sub(st[20], PRICE_REC + 1) end
    if bit.band(old_flags, HAS_QTY) ~= 0 then st[21] = string.sub(st[21], QTY_REC + 1) end
    st[5] = string.sub(st[5], REC + 1)
    st[6], st[7] = drop_first(st[6]), drop_first(st[7])
  end
end

-- month buckets (binary, sorted by month) ------------------------------------------------------
local function add_month(month, spend)
  local months = st[9]
  local i = #months / MONTH_REC
  while i >= 1 and struct.unpack('>H', months, (i - 1) * MONTH_REC + 1) > month do i = i - 1 end
  local record
  if i >= 1 and struct.unpack('>H', months, (i - 1) * MONTH_REC + 1) == month then
    local _, n, cents = struct.unpack('>HI4I6', months, (i - 1) * MONTH_REC + 1)
    record = struct.pack('>HI4I6', month, n + 1, cents + spend)
    st[9] = string.sub(months, 1, (i - 1) * MONTH_REC) .. record
            .. string.sub(months, i * MONTH_REC + 1)
    return
  end
  record = struct.pack('>HI4I6', month, 1, spend)
  st[9] = string.sub(months, 1, i * MONTH_REC) .. record .. string.sub(months, i * MONTH_REC + 1)
end

-- Single-linkage clusters of times with gaps <= gap. Flat
-- [closed n, closed first start, closed last start, closed previous start, s1, e1, ...]
local function add_time(cl, ts)
  local first, last = nil, nil
  for i = 5, #cl, 2 do
    if ts >= cl[i] - gap and ts <= cl[i + 1] + gap then
      if not first then first = i end
      last = i
    end
  end
  if not first then
    local pos = #cl + 1
    while pos > 5 and cl[pos - 2] > ts do pos = pos - 2 end
    table.insert(cl, pos, ts)
    table.insert(cl, pos, ts)
    return
  end
  local s = math.min(cl[first], ts)
  local e = math.max(cl[last + 1], ts)
  for _ = first + 2, last, 2 do
    table.remove(cl, first + 2)
    table.remove(cl, first + 2)
  end
  cl[first], cl[first + 1] = s, e
end

-- Intervals no admissible event can reach any more move into the closed summary.
local function close_clusters(cl, horizon)
  while #cl >= 6 and cl[6] + gap < horizon do
    local s = cl[5]
    if cl[1] == 0 then cl[2] = s end
    cl[4] = cl[3]
    cl[3] = s
    cl[1] = cl[1] + 1
    table.remove(cl, 5)
    table.remove(cl, 5)
  end
end

-- recent purchases: items (0xFF list) + ts (u48 each), by (ts desc, item asc) -----------------
local function read_recent()
  local items, stamps = split(st[15]), {}
  for i = 1, #items do stamps[i] = struct.unpack('>I6', st[16], (i - 1) * 6 + 1) end
  return items, stamps
end

local function write_recent(items, stamps)
  local packed = {}
  for i = 1, #stamps do packed[i] = struct.pack('>I6', stamps[i]) end
  st[15], st[16] = join(items), table.concat(packed)
end

local function add_recent_purchase(item, ts)
  -- Fast path, the common case: the newest purchase, of an item not in the list yet.
  local newest = #st[16] > 0 and struct.unpack('>I6', st[16], 1) or -1
  if ts > newest and not string.find(SEP .. st[15], SEP .. item .. SEP, 1, true)
     and #st[16] < 6 * max_recent then
    st[15] = item .. SEP .. st[15]
    st[16] = struct.pack('>I6', ts) .. st[16]
    return
  end
  local items, stamps = read_recent()
  for i = 1, #items do
    if items[i] == item then
      if stamps[i] >= ts then return end
      table.remove(items, i)
      table.remove(stamps, i)
      break
    end
  end
  local pos = #items + 1
  while pos > 1 and (stamps[pos - 1] < ts or (stamps[pos - 1] == ts and items[pos - 1] > item)) do
    pos = pos - 1
  end
  table.insert(items, pos, item)
  table.insert(stamps, pos, ts)
  while #items > max_recent do
    table.remove(items)
    table.remove(stamps)
  end
  write_recent(items, stamps)
end

-- Layout 3 -> 4: sequence timestamps were u64, and day buckets also counted the events
-- still in the sequence. A bucket saturated at MAX_COUNT keeps MAX_COUNT - (the sequence's
-- events), which reads back as MAX_COUNT again once the sequence is added.
local function migrate_from_3()
  local old, records = st[5], {}
  for i = 1, #old / 19 do
    local ts, h, t, qty, cents = struct.unpack('>I8I4BHi4', old, (i - 1) * 19 + 1)
    records[i] = struct.pack(REC4_FMT, ts, h, t, qty, cents)
    local day = math.floor(ts / MS_PER_DAY)
    local days = st[8]
    for j = 1, #days / DAY_REC do
      local base = (j - 1) * DAY_REC
      if struct.unpack('>H', days, base + 1) == day then
        local at = base + 3 + 2 * t
        local count = struct.unpack('>H', days, at)
        if count > 0 then
          st[8] = string.sub(days, 1, at - 1) .. struct.pack('>H', count - 1)
                  .. string.sub(days, at + 2)
        end
        break
      end
    end
  end
  st[5] = table.concat(records)
  local kept = {}  -- drop the rows that only counted sequence events
  for j = 1, #st[8] / DAY_REC do
    local row = string.sub(st[8], (j - 1) * DAY_REC + 1, j * DAY_REC)
    if string.sub(row, 3) ~= string.rep('\0', DAY_REC - 2) then kept[#kept + 1] = row end
  end
  st[8] = table.concat(kept)
  st[1] = 4
end

-- Layout 4 -> 5: fixed 17-byte records (ts u48, id hash, type, quantity, cents or -1)
-- become 10-byte records; prices and quantities other than 1 move to sparse columns.
local function migrate_from_4()
  local old, records, prices, quantities = st[5], {}, {}, {}
  for i = 1, #old / REC4 do
    local ts, h, t, qty, cents = struct.unpack(REC4_FMT, old, (i - 1) * REC4 + 1)
    local flags = t
    if cents >= 0 then
      flags = flags + HAS_PRICE
      prices[#prices + 1] = struct.pack(PRICE_FMT, cents)
    end
    if qty ~= 1 then
      flags = flags + HAS_QTY
      quantities[#quantities + 1] = struct.pack(QTY_FMT, qty)
    end
    records[i] = struct.pack('>I4I6', h, ts * FLAG_UNIT + flags)
  end
  st[5], st[20], st[21] = table.concat(records), table.concat(prices), table.concat(quantities)
  st[1] = LAYOUT
end

-- apply ---------------------------------------------------------------------------------------
local function apply_member(state_key, decision_key, outbox_key, args)
  local member = args[1]
  local value = redis.call('GET', state_key)
  local raw, decision, framed = split_value(value)
  -- layout 4 and older kept the decision state under a key of its own: fold it in
  local old_decision = not framed and redis.call('GET', decision_key)
  if old_decision then decision = old_decision end
  if raw ~= '' then
    st = cmsgpack.unpack(raw)
    if st[2] ~= member then
      return redis.error_reply('state key ' .. state_key .. ' holds another member')
    end
    if st[1] == 3 then migrate_from_3() end
    if st[1] == 4 then migrate_from_4() end
    if st[1] ~= LAYOUT then
      return redis.error_reply('state key ' .. state_key .. ' has unknown layout ' .. tostring(st[1]))
    end
  else
    st = {LAYOUT, member, 0, 0, '', '', '', '', '', {0, 0, 0, 0, 0}, 0, 0,
          {0, 0, 0, 0}, {0, 0, 0, 0}, '', '', {}, 0, 0, '', ''}
  end
  local statuses = {}
  local offsets = st[17]
  for _, e in ipairs(args[3]) do
    local source, offset, ts, h, item = e[1], e[2], e[3], e[4], e[5]
    local t, cents, qty, cat, day, month = e[6], e[7], e[8], e[9], e[10], e[11]
    local applied_offset = offsets[source]
    local status = 'a'
    if applied_offset and offset <= applied_offset then
      status = 'o'
    elseif seen(ts, h, item) then
      status = 'i'
    elseif st[3] > 0 and ts < st[3] - lateness then
      status = 'l'
    end
    if status ~= 'o' then offsets[source] = offset end
    if status == 'a' then
      insert_event(ts, h, t, qty, cents, item, cat)
      if ts > st[3] then st[3] = ts end
      if st[4] == 0 or ts < st[4] then st[4] = ts end
      if day > st[18] then st[18] = day end
      if month > st[19] then st[19] = month end
      if ts > st[10][t + 1] then st[10][t + 1] = ts end
      add_time(st[13], ts)
      if t == PURCHASE then
        local spend = 0
        if cents >= 0 then spend = cents * qty end
        st[11] = st[11] + 1
        st[12] = st[12] + spend
        add_month(month, spend)
        add_time(st[14], ts)
        add_recent_purchase(item, ts)
      end
    end
    statuses[#statuses + 1] = status
  end

  -- Drop what no window can read any more (relative to the member's latest day / month).
  local drop = 0
  while drop * DAY_REC < #st[8]
        and struct.unpack('>H', st[8], drop * DAY_REC + 1) <= st[18] - DAYS_KEPT do
    drop = drop + 1
  end
  if drop > 0 then st[8] = string.sub(st[8], drop * DAY_REC + 1) end
  drop = 0
  while drop * MONTH_REC < #st[9]
        and struct.unpack('>H', st[9], drop * MONTH_REC + 1) <= st[19] - MONTHS_KEPT do
    drop = drop + 1
  end
  if drop > 0 then st[9] = string.sub(st[9], drop * MONTH_REC + 1) end
  if #st[16] > 0 then
    local first_day = st[18] - exclusion_days + 1
    local oldest = struct.unpack('>I6', st[16], #st[16] - 5)
    if math.floor(oldest / MS_PER_DAY) < first_day then
      local items, stamps = read_recent()
      while #items > 0 and math.floor(stamps[#stamps] / MS_PER_DAY) < first_day do
        table.remove(items)
        table.remove(stamps)
      end
      write_recent(items, stamps)
    end
  end
  if st[3] > 0 then
    close_clusters(st[13], st[3] - lateness)
    close_clusters(st[14], st[3] - lateness)
  end

  -- A member with no applied event has no state: its value holds a decision state at most.
  local blob = false
  if st[3] > 0 then blob = cmsgpack.pack(st) end
  if blob or decision then
    redis.call('SET', state_key, join_value(blob or '', decision), 'PX', ttl)
  end
  if old_decision then redis.call('DEL', decision_key) end

  local delivered = args[2]
  if #delivered > 0 then redis.call('HDEL', outbox_key, unpack(delivered)) end
  local pending = redis.call('HGETALL', outbox_key)
  if #pending > 0 then redis.call('PEXPIRE', outbox_key, ttl) end
  return {blob, decision, pending, table.concat(statuses)}
end

local replies = {}
for m = 1, #ARGV - 1 do
  local reply = apply_member(KEYS[3 * m - 2], KEYS[3 * m - 1], KEYS[3 * m],
                             cmsgpack.unpack(ARGV[1 + m]))
  if reply.err then return reply end
  replies[m] = reply
end
return replies
