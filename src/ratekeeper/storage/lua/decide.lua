-- ratekeeper: the driver, decide() of ratekeeper/_algorithms.py plus the writes.
--
-- KEYS: one key per rate of the policy, all with one hash tag (one Cluster slot).
-- ARGV: the policy, cost, max_wait, commit (1/0), then now (absent: the server's TIME).
--       The policy is packed once per limit as little-endian doubles: the TTL slack in
--       ms, then per rate: algorithm (1 fixed, 2 sliding window, 3 sliding log, 4 token
--       bucket), amount, period, capacity, interval.
-- Reply: allowed (1/0), available, retry_after, reset_after, binding index (0-based),
--        packed as five little-endian int64 in one string, which costs the server less to
--        send and the client less to read than an array.
--
-- Phase 1 decides every rate without writing; only an admitted, committed request with a
-- cost reaches phase 2, which writes every new state with a relative TTL (never an
-- absolute one: `now` may come from a client) of at least 1 ms. A refusal writes nothing
-- but the conversion of a refused token bucket whose rate changed. A policy of one rate,
-- the common case, takes a straight path without tables.

local STEPS = {fixed_window, sliding_window, sliding_log, token_bucket}

local function reply(allowed, available, retry_after, reset_after, binding)
  return struct.pack('<i8i8i8i8i8', allowed, available, retry_after, reset_after, binding)
end

local now
if ARGV[5] then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local policy = ARGV[1]
local cost = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local commit = ARGV[4] == '1'
local slack = struct.unpack('<d', policy)
local n = #KEYS

-- Keep a state with a relative TTL of at least 1 ms, plus the slack an injected clock needs.
local function write(key, st, expiry)
  local ttl = floordiv(expiry - now + 999, 1000)
  if ttl < 1 then
    ttl = 1
  end
  redis.call('SET', key, st, 'PX', string.format('%d', ttl + slack))
end

if n == 1 then
  local code, amount, period, capacity, interval = struct.unpack('<ddddd', policy, 9)
  local step = STEPS[code]
  local raw = redis.call('GET', KEYS[1])
  if cost > capacity then
    local _, _, available, _, reset = step(raw, now, amount, period, capacity, interval, 0, 0)
    return reply(0, available, NEVER, reset, 0)
  end
  local ok, st, available, wait, reset, expiry =
    step(raw, now, amount, period, capacity, interval, cost, max_wait)
  if cost == 0 then
    return reply(1, available, 0, reset, 0)
  end
  if commit and st then
    write(KEYS[1], st, expiry)
  end
  if ok then
    return reply(1, available, wait, reset, 0)
  end
  return reply(0, available, wait, reset, 0)
end

local meters, raws = {}, redis.call('MGET', unpack(KEYS))
local pos = 9
for i = 1, n do
  local code, amount, period, capacity, interval, after = struct.unpack('<ddddd', policy, pos)
  meters[i] = {STEPS[code], amount, period, capacity, interval}
  pos = after
end

local results = {}
for i = 1, n do
  local m = meters[i]
  if cost > m[4] then
    local peeked = {m[1](raws[i], now, m[2], m[3], m[4], m[5], 0, 0)}
    results[i] = {false, nil, peeked[3], NEVER, peeked[5]}
  else
    results[i] = {m[1](raws[i], now, m[2], m[3], m[4], m[5], cost, max_wait)}
  end
end
local available, reset, best = results[1][3], results[1][5], 1
for i = 2, n do
  if results[i][3] < available then
    available = results[i][3]
    best = i
  end
  if results[i][5] > reset then
    reset = results[i][5]
  end
end
if cost == 0 then
  return reply(1, available, 0, reset, best - 1)
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
  if commit then
    for i = 1, n do
      local r = results[i]
      if not r[1] and r[2] then
        write(KEYS[i], r[2], r[6])
      end
    end
  end
  if never then
    return reply(0, available, NEVER, reset, never - 1)
  end
  return reply(0, available, results[refused][4], reset, refused - 1)
end

local wait = 0
for i = 1, n do
  if results[i][4] > wait then
    wait = results[i][4]
  end
end
if wait > 0 then
  -- A reservation must hold every rate at the same future instant, or the rates that had
  -- room now would count the units earlier than they are used.
  local at = now + wait
  for i = 1, n do
    local m = meters[i]
    results[i] = {m[1](raws[i], at, m[2], m[3], m[4], m[5], cost, 0)}
    if not results[i][1] then
      return reply(0, available, wait, reset, 0)
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

if commit then
  for i = 1, n do
    write(KEYS[i], results[i][2], results[i][6])
  end
end
best = 1
for i = 2, n do
  if results[i][3] < results[best][3] then
    best = i
  end
end
return reply(1, available, wait, reset, best - 1)
