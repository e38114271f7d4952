-- Extends the leases this worker still holds (its outcomes wait for a slow or down
-- ledger), so that they are not reclaimed and sent again. ARGV after the common ones:
-- lease_ms, then per message: account, id, qscore. A lease already gone (reclaimed)
-- is not brought back. Returns how many were extended.
local expires = now_ms() + tonumber(ARGV[ARG0 + 1])
local n = 0
for i = ARG0 + 2, #ARGV, 3 do
  n = n + redis.call('ZADD', P .. 'leases', 'XX', 'CH', expires, ARGV[i] .. '\n' .. ARGV[i + 1] .. '\n' .. ARGV[i + 2])
end
return n
