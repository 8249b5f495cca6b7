-- ratekeeper: the fixed-window step, fixed_window() of ratekeeper/_algorithms.py.
--
-- At most `amount` per window of `period` aligned to the clock's zero.
-- Stored state: index, count. Every step takes the stored state (a string, or false),
-- now, amount, period, capacity, interval, cost and max_wait, writes nothing, and returns
-- allowed, new_state (packed, or nil), available, retry_after, reset_after, expiry.

local function fixed_window(raw, now, amount, period, capacity, interval, cost, max_wait)
  local index = floordiv(now, period)
  local count = 0
  if raw then
    local old, used = struct.unpack('<dd', raw)
    if old >= index then -- a clock behind the state stays in its window
      index = old
      count = used
    end
  end
  local finish = (index + 1) * period
  local available = 0
  if count < amount then
    available = amount - count
  end
  if count + cost <= amount then
    return true, struct.pack('<dd', index, count + cost), available, 0, finish - now, finish
  end
  return false, nil, available, finish - now, finish - now, finish
end
