-- ratekeeper: the sliding-log step, sliding_log() of ratekeeper/_algorithms.py.
--
-- Exact: at most `amount` in any half-open interval of length `period`.
-- Stored state: time1, units1, time2, units2, ..., oldest first. A log may be long, and
-- unpack() and struct take a bounded number of values, so it is read and written by
-- chunks of LOG_CHUNK doubles (an even number: whole entries).

local LOG_CHUNK = 200

local function sliding_log(raw, now, amount, period, capacity, interval, cost, max_wait)
  local horizon = now - period -- an entry at t counts while t > now - period
  local live, n, used = {}, 0, 0
  if raw then
    local left, pos = #raw / 8, 1
    while left > 0 do
      local k = math.min(left, LOG_CHUNK)
      local got = {struct.unpack('<' .. string.rep('d', k), raw, pos)}
      pos = got[k + 1]
      for i = 1, k, 2 do
        if got[i] > horizon then
          live[n + 1] = got[i]
          live[n + 2] = got[i + 1]
          n = n + 2
          used = used + got[i + 1]
        end
      end
      left = left - k
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
      n = n + 2
    end
    local parts = {}
    for i = 1, n, LOG_CHUNK do
      local j = math.min(i + LOG_CHUNK - 1, n)
      parts[#parts + 1] = struct.pack('<' .. string.rep('d', j - i + 1), unpack(live, i, j))
    end
    return true, table.concat(parts), available, 0, at + period - now, at + period
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
  return false, nil, available, wait, live[n - 1] + period - now, now
end
