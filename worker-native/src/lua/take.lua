-- Takes up to `n` due messages, earliest-due account first, the most urgent message of
-- each, records each send in its account's limit state and leases it to the caller.
-- ARGV after the common ones: n, lease_ms.
-- Returns {now, next_due (-1 when idle), {acct1, id1, qscore1, payload1, ...}}.
local now = now_ms()
local n, lease = tonumber(ARGV[ARG0 + 1]), tonumber(ARGV[ARG0 + 2])

-- Retries whose backoff is over go back to their queues.
local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, 500)
for _, member in ipairs(due) do
  redis.call('ZREM', P .. 'delayed', member)
  local acct, id, qs = split(member)
  requeue(acct, id, qs)
end

local out = {}
local taken = 0
while taken < n do
  local head = redis.call('ZRANGE', P .. 'ready', 0, 0, 'WITHSCORES')
  if #head == 0 or tonumber(head[2]) > now then break end
  local acct = head[1]
  local popped = redis.call('ZPOPMIN', P .. 'q:' .. acct)
  if #popped == 0 then
    redis.call('ZREM', P .. 'ready', acct)
  else
    local id, qs = popped[1], popped[2]
    local payload = redis.call('HGET', P .. 'body:' .. acct, id)
    if payload then
      record_send(acct, now)
      redis.call('ZADD', P .. 'leases', now + lease, acct .. '\n' .. id .. '\n' .. qs)
      out[#out + 1] = acct; out[#out + 1] = id; out[#out + 1] = qs; out[#out + 1] = payload
      taken = taken + 1
    end
    if redis.call('ZCARD', P .. 'q:' .. acct) > 0 then
      redis.call('ZADD', P .. 'ready', next_allowed(acct), acct)
    else
      redis.call('ZREM', P .. 'ready', acct)
    end
  end
end

local r = redis.call('ZRANGE', P .. 'ready', 0, 0, 'WITHSCORES')
local d = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
local next_due = -1
if #r > 0 then next_due = tonumber(r[2]) end
if #d > 0 and (next_due < 0 or tonumber(d[2]) < next_due) then next_due = tonumber(d[2]) end
return {now, next_due, out}
