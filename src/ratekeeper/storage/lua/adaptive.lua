-- ratekeeper: adaptive back-off, scale_at() and throttled() of ratekeeper/_adaptive.py.
--
-- KEYS: the back-off key of one (limit name, key), with the hash tag of its rates' keys.
-- ARGV: now (empty: the server's TIME), mode ('s': read the scale, 't': record a
--       throttle), TTL slack in ms, then for 't': decrease, floor, step (permille),
--       quiet, cooldown (microseconds).
-- Reply: the scale (permille of the configured rate) in force after the call.
--
-- State "expires scale since step quiet cooldown". The expiry is stored as well as set as
-- a TTL because `now` may come from a client clock that does not run at the server's pace.

local FULL = 1000

local function scale_at(st, now)
  if not st or st[1] <= now then
    return FULL
  end
  local scale, since, step, quiet = st[2], st[3], st[4], st[5]
  local elapsed = now - since
  if elapsed < quiet then
    return scale
  end
  local regained = scale + step * floordiv(elapsed, quiet)
  if regained < FULL then
    return regained
  end
  return FULL
end

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end

local st = nil
local raw = redis.call('GET', KEYS[1])
if raw then
  st = {}
  for field in string.gmatch(raw, '%S+') do
    st[#st + 1] = tonumber(field)
  end
end

if ARGV[2] == 's' then
  return scale_at(st, now)
end

local decrease, floor, step = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local quiet, cooldown = tonumber(ARGV[7]), tonumber(ARGV[8])
if st and st[1] > now and now - st[3] < st[6] then
  -- Within the cooldown of the last recorded throttle: a burst of throttled replies
  -- across the fleet counts once.
  return scale_at(st, now)
end
local scale = floordiv(scale_at(st, now) * decrease, FULL)
if scale < floor then
  scale = floor
end
local expires = now + quiet * floordiv(FULL - scale + step - 1, step)
local ttl = floordiv(expires - now + 999, 1000)
if ttl < 1 then
  ttl = 1
end
local fields = {expires, scale, now, step, quiet, cooldown}
for i = 1, 6 do
  fields[i] = string.format('%d', fields[i])
end
redis.call('SET', KEYS[1], table.concat(fields, ' '), 'PX', string.format('%d', ttl + tonumber(ARGV[3])))
return scale
