-- ratekeeper: the token-bucket step, token_bucket() of ratekeeper/_algorithms.py.
--
-- GCRA: one theoretical arrival time (tat) per key, refilled `amount/period` up to the
-- capacity. A request may be admitted up to `max_wait` in the future (a reservation).
-- State {[0] = expiry, tat, interval, capacity}.

local function token_bucket(st, now, m, cost, max_wait)
  local interval, capacity = m.interval, m.capacity
  local tat = now
  local converted = false
  if st and st[1] > now then
    tat = st[1]
    if st[2] ~= interval or st[3] ~= capacity then
      converted = true
      -- The rate or burst changed: keep the level (whole units, as in the old bucket),
      -- clamped into the new capacity, and refill from there at the new rate.
      local level = floordiv(st[3] * st[2] - (st[1] - now), st[2])
      if level > capacity then
        level = capacity
      end
      tat = now + (capacity - level) * interval
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
    return true, {[0] = new_tat, new_tat, interval, capacity}, available, wait, new_tat - now
  end
  -- A refused bucket whose rate changed is kept converted (nothing consumed).
  local kept = nil
  if converted then
    kept = {[0] = tat, tat, interval, capacity}
  end
  return false, kept, available, wait, tat - now
end
