-- The value under a member's state key (layout 5 on), shared by apply, record and idle:
-- FRAME (byte 0xC1, which starts no msgpack value), the decision state's length (u16),
-- the decision state (opaque bytes from round trip 2), then the msgpack state array
-- ('' until the member's first applied event). Keeping both in one value saves a key
-- per member (~85 bytes of Redis overhead) and a GET per member in round trip 1.
-- Layouts 4 and older stored the bare array there and the decision state under a key of
-- its own, which the scripts still read, fold into the value and delete.
local FRAME, FRAME_HEAD, MAX_DECISION = '\193', 3, 65535

-- state ('' or a msgpack array), decision (false: none), framed (false: an older value)
local function split_value(value)
  if not value then return '', false, false end
  if string.sub(value, 1, 1) ~= FRAME then return value, false, false end
  local n = struct.unpack('>H', value, 2)
  local decision = false
  if n > 0 then decision = string.sub(value, FRAME_HEAD + 1, FRAME_HEAD + n) end
  return string.sub(value, FRAME_HEAD + n + 1), decision, true
end

local function join_value(state, decision)
  decision = decision or ''
  return FRAME .. struct.pack('>H', #decision) .. decision .. state
end

