-- ratekeeper: the fixed-window step, fixed_window() of ratekeeper/_algorithms.py.
--
-- At most `amount` per window of `period` aligned to the clock's zero.
-- State {[0] = expiry, index, count}. A step returns
-- allowed, new_state, available, retry_after, reset_after and writes nothing.

local function fixed_window(st, now, m, cost, max_wait)
  local period, amount = m.period, m.amount
  local index = floordiv(now, period)
  local count = 0
  if st and st[1] >= index then -- a clock behind the state stays in its window
    index = st[1]
    count = st[2]
  end
  local finish = (index + 1) * period
  local available = 0
  if count < amount then
    available = amount - count
  end
  if count + cost <= amount then
    return true, {[0] = finish, index, count + cost}, available, 0, finish - now
  end
  return false, nil, available, finish - now, finish - now
end
