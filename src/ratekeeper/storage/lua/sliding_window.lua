-- ratekeeper: the sliding-window step, sliding_window() of ratekeeper/_algorithms.py.
--
-- The weighted two-window counter: the previous window counts by its overlap.
-- Stored state: index, current, previous. The float expressions are evaluated in the
-- same order as in Python, so both give the same bits.

local function sliding_window(raw, now, amount, period, capacity, interval, cost, max_wait)
  local index = floordiv(now, period)
  local current, previous = 0, 0
  if raw then
    local old, cur, prev = struct.unpack('<ddd', raw)
    if old >= index then
      index = old
      current = cur
      previous = prev
    elseif old == index - 1 then
      previous = cur
    end
  end
  local elapsed = now - index * period
  if elapsed < 0 then
    elapsed = 0
  end
  local used = previous * (period - elapsed) / period + current
  local available = math.floor(amount - used)
  if available < 0 then
    available = 0
  end
  if used + cost <= amount then
    local finish = (index + 2) * period
    local st = struct.pack('<ddd', index, current + cost, previous)
    return true, st, available, 0, finish - now, finish
  end
  local wait
  if current + cost <= amount then
    -- Only the previous window's weight is in the way: wait until it has faded enough.
    local fade = (amount - current - cost) * period / previous
    wait = math.ceil(period - fade) - elapsed
  else
    -- This window's own count is in the way: it must first become the previous one.
    local fade = (amount - cost) * period / current
    wait = period - elapsed + math.max(0, math.ceil(period - fade))
  end
  if wait < 1 then
    wait = 1
  end
  local reset = 0
  if current ~= 0 then
    reset = (index + 2) * period - now
  elseif previous ~= 0 then
    reset = (index + 1) * period - now
  end
  return false, nil, available, wait, reset, now
end
