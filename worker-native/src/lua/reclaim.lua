-- Expired leases (a worker died mid-send) go back to their queues. ARGV after the
-- common ones: max number to reclaim. Returns how many were requeued.
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, tonumber(ARGV[ARG0 + 1]))
local n = 0
for _, member in ipairs(expired) do
  redis.call('ZREM', P .. 'leases', member)
  local acct, id, qs = split(member)
  n = n + requeue(acct, id, qs)
end
return n
