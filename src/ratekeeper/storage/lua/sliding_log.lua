-- ratekeeper: the sliding-log step, sliding_log() of ratekeeper/_algorithms.py.
--
-- Exact: at most `amount` in any half-open interval of length `period`.
-- State {[0] = expiry, time1, units1, time2, units2, ...}, oldest first.

local function sliding_log(st, now, m, cost, max_wait)
  local period, amount = m.period, m.amount
  local horizon = now - period -- an entry at t counts while t > now - period
  local live, n, used = {}, 0, 0
  if st then
    for i = 1, #st, 2 do
      if st[i] > horizon then
        live[n + 1] = st[i]
        live[n + 2] = st[i + 1]
        n = n + 2
        used = used + st[i + 1]
      end
    end
  end
  local available = 0
  if used < amount then
    available = amount - used
  end
  if used + cost <= amount then
    local at = now
    if n > 0 and live[n - 1] >= now then -- a clock behind the log appends at its end
      at = live[n - 1]
      live[n] = live[n] + cost
    else
      live[n + 1] = now
      live[n + 2] = cost
    end
    live[0] = at + period
    return true, live, available, 0, at + period - now
  end
  local need = used + cost - amount
  local freed, wait = 0, 0
  for i = 1, n, 2 do
    freed = freed + live[i + 1]
    if freed >= need then
      wait = live[i] + period - now
      break
    end
  end
  return false, nil, available, wait, live[n - 1] + period - now
end
