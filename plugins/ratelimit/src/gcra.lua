-- phigate rate limits: GCRA over one or more keys, atomically (a script runs alone in Redis).
--
-- KEYS[i]            one bucket per applicable limit, in the configured order
-- ARGV[2i-1]         T: emission interval of limit i, in microseconds (period / requests)
-- ARGV[2i]           tau: tolerance of limit i, in microseconds (T * (burst - 1))
--
-- A bucket stores its theoretical arrival time (TAT), in microseconds of Redis server time, so
-- every replica judges by one clock. A request conforms to limit i when now >= TAT - tau; then
-- TAT becomes max(TAT, now) + T and the key expires when the bucket is full again. Limits are
-- counted in order and the first non-conforming one stops the script (the ones before it keep
-- their count), exactly like the in-memory backend.
--
-- Returns {0, i, wait} when limit i refuses (wait: microseconds until it would conform), else
-- {1, remaining_1, reset_1, remaining_2, reset_2, ...} (reset: microseconds until full again).

-- Redis < 5 replicates scripts verbatim, which TIME would break; effects replication fixes it.
if redis.replicate_commands then redis.replicate_commands() end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {1}
for i, key in ipairs(KEYS) do
  local t = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now) or now
  if tat < now then tat = now end
  if now < tat - tau then
    return {0, i, tat - tau - now}
  end
  local new_tat = tat + t
  local ttl_ms = math.ceil((new_tat - now) / 1000)
  -- string.format keeps all digits; tostring would round a 16-digit number to 14.
  redis.call('SET', key, string.format('%d', new_tat), 'PX', ttl_ms)
  out[#out + 1] = math.floor((now + tau + t - new_tat) / t)
  out[#out + 1] = new_tat - now
end
return out
