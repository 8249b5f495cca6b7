-- ratekeeper: the driver, decide() of ratekeeper/_algorithms.py plus the writes.
--
-- KEYS: one key per rate of the policy, all with one hash tag (one Cluster slot).
-- ARGV: now (empty: the server's TIME), cost, max_wait, commit (1/0), TTL slack in ms,
--       then per rate: algorithm (f, s, l, t), amount, period, capacity, interval.
-- Reply: {allowed (1/0), available, retry_after, reset_after, binding index (0-based)}.
-- A step returns five values; they are packed as {allowed, state, available, retry_after,
-- reset_after} (index 2 may be nil: positions are kept by the table constructor).
--
-- Phase 1 decides every rate without writing; only an admitted, committed request with a
-- cost reaches phase 2, which writes every new state with a relative TTL (never an
-- absolute one: `now` may come from a client) of at least 1 ms. A refusal writes nothing
-- but the conversion of a refused token bucket whose rate changed.

local STEPS = {f = fixed_window, s = sliding_window, l = sliding_log, t = token_bucket}

local function decode(raw)
  if not raw then
    return nil
  end
  local st, i = {}, 0
  for field in string.gmatch(raw, '%S+') do
    i = i + 1
    st[i] = tonumber(field)
  end
  return st
end

local function encode(st)
  local fields = {}
  for i = 1, #st do
    fields[i] = string.format('%d', st[i])
  end
  return table.concat(fields, ' ')
end

local function tightest(results, n)
  local best = 1
  for i = 2, n do
    if results[i][3] < results[best][3] then
      best = i
    end
  end
  return best - 1
end

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local n = #KEYS

local meters, states = {}, {}
for i = 1, n do
  local a = 6 + (i - 1) * 5
  meters[i] = {
    step = STEPS[ARGV[a]],
    amount = tonumber(ARGV[a + 1]),
    period = tonumber(ARGV[a + 2]),
    capacity = tonumber(ARGV[a + 3]),
    interval = tonumber(ARGV[a + 4]),
  }
end
if n == 1 then
  states[1] = decode(redis.call('GET', KEYS[1]))
else
  local raw = redis.call('MGET', unpack(KEYS))
  for i = 1, n do
    states[i] = decode(raw[i])
  end
end

local results = {}
for i = 1, n do
  local m = meters[i]
  if cost > m.capacity then
    local peeked = {m.step(states[i], now, m, 0, 0)}
    results[i] = {false, nil, peeked[3], NEVER, peeked[5]}
  else
    results[i] = {m.step(states[i], now, m, cost, max_wait)}
  end
end
local available, reset = results[1][3], results[1][5]
for i = 2, n do
  if results[i][3] < available then
    available = results[i][3]
  end
  if results[i][5] > reset then
    reset = results[i][5]
  end
end
if cost == 0 then
  return {1, available, 0, reset, tightest(results, n)}
end

-- Keep state i with a relative TTL (never an absolute one: `now` may come from a client)
-- of at least 1 ms, plus the slack that an injected clock needs.
local function write(i, st)
  local ttl = floordiv(st[0] - now + 999, 1000)
  if ttl < 1 then
    ttl = 1
  end
  redis.call('SET', KEYS[i], encode(st), 'PX', string.format('%d', ttl + tonumber(ARGV[5])))
end

local never, refused = nil, nil
for i = 1, n do
  local r = results[i]
  if not r[1] then
    if r[4] == NEVER then
      never = never or i
    elseif refused == nil or r[4] > results[refused][4] then
      refused = i
    end
  end
end
if never or refused then
  -- Nothing is consumed; only a refused token bucket whose rate changed keeps its
  -- conversion (see token_bucket), as _algorithms.decide() does.
  if ARGV[4] == '1' then
    for i = 1, n do
      local r = results[i]
      if not r[1] and r[2] then
        write(i, r[2])
      end
    end
  end
  if never then
    return {0, available, NEVER, reset, never - 1}
  end
  return {0, available, results[refused][4], reset, refused - 1}
end

local wait = 0
for i = 1, n do
  if results[i][4] > wait then
    wait = results[i][4]
  end
end
if wait > 0 and n > 1 then
  -- A reservation must hold every rate at the same future instant, or the rates that had
  -- room now would count the units earlier than they are used.
  local at = now + wait
  for i = 1, n do
    local m = meters[i]
    results[i] = {m.step(states[i], at, m, cost, 0)}
    if not results[i][1] then
      return {0, available, wait, reset, 0}
    end
  end
  reset = results[1][5]
  for i = 2, n do
    if results[i][5] > reset then
      reset = results[i][5]
    end
  end
  reset = reset + wait
end

if ARGV[4] == '1' then
  for i = 1, n do
    write(i, results[i][2])
  end
end
return {1, available, wait, reset, tightest(results, n)}
