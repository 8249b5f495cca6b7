-- ratekeeper: the token-bucket step, token_bucket() of ratekeeper/_algorithms.py.
--
-- GCRA: one theoretical arrival time (tat) per key, refilled `amount/period` up to the
-- capacity. A request may be admitted up to `max_wait` in the future (a reservation).
-- Stored state: tat, interval, capacity (the tat is also the state's expiry).

local function token_bucket(raw, now, amount, period, capacity, interval, cost, max_wait)
  local tat = now
  local converted = false
  if raw then
    local old, old_interval, old_capacity = struct.unpack('<ddd', raw)
    if old > now then
      tat = old
      if old_interval ~= interval or old_capacity ~= capacity then
        converted = true
        -- The rate or burst changed: keep the level (whole units, as in the old bucket),
        -- clamped into the new capacity, and refill from there at the new rate.
        local level = floordiv(old_capacity * old_interval - (old - now), old_interval)
        if level > capacity then
          level = capacity
        end
        tat = now + (capacity - level) * interval
      end
    end
  end
  local tolerance = capacity * interval
  local available = floordiv(now + tolerance - tat, interval)
  if available < 0 then
    available = 0
  end
  local new_tat = tat + cost * interval
  local wait = new_tat - tolerance - now
  if wait <= max_wait then
    if wait < 0 then
      wait = 0
    end
    local st = struct.pack('<ddd', new_tat, interval, capacity)
    return true, st, available, wait, new_tat - now, new_tat
  end
  -- A refused bucket whose rate changed is kept converted (nothing consumed).
  local kept = nil
  if converted then
    kept = struct.pack('<ddd', tat, interval, capacity)
  end
  return false, kept, available, wait, tat - now, tat
end
