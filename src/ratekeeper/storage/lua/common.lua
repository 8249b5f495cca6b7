-- ratekeeper: helpers shared by the algorithm steps and the driver.
--
-- Redis' Lua has doubles only. Every quantity is an integer number of microseconds or
-- units below 2^53, so sums and products are exact; a quotient is not, hence floordiv.
-- A state is stored as little-endian doubles (struct.pack '<d'), which hold those integers
-- exactly and cost far less to read and write than text.

local NEVER = -1

-- floor(a / b) exactly, as Python's a // b, for integers a and b > 0 below 2^53: the
-- double quotient is off by at most one, and the remainder says which way.
local function floordiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then
    q = q - 1
  elseif r >= b then
    q = q + 1
  end
  return q
end
