-- Takes up to `n` due messages, earliest-due account first, the most urgent message of
-- each, records each send in its account's limit state and leases it to the caller.
-- ARGV after the common ones: n, lease_ms.
-- Returns {now, next_due (-1 when idle), {acct1, id1, qscore1, payload1, ...}}.
local now = now_ms()
local n, lease = tonumber(ARGV[ARG0 + 1]), tonumber(ARGV[ARG0 + 2])

-- Retries whose backoff is over, and scheduled messages now due (`sendAt`), join their
-- queues.
local due_retries = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, 500)
for _, member in ipairs(due_retries) do
  redis.call('ZREM', P .. 'delayed', member)
  local acct, id, qs = split(member)
  requeue(acct, id, qs)
end

local out = {}
local taken = 0
local due = redis.call('ZRANGEBYSCORE', P .. 'ready', '-inf', now, 'WITHSCORES', 'LIMIT', 0, n)
for i = 1, #due, 2 do
  if taken >= n then break end
  local acct, slot = due[i], tonumber(due[i + 1])
  local max, window, burst = limit_of(acct)
  local q = P .. 'q:' .. acct
  while true do
    local popped = redis.call('ZPOPMIN', q)
    if #popped == 0 then
      -- Its queue ran empty at its last send (an account stays in `ready` until it is
      -- next due, which spares a ZCARD per message): it leaves, keeping its next
      -- allowed time.
      redis.call('ZREM', P .. 'ready', acct)
      if burst == 1 then redis.call('HSET', P .. 'st:' .. acct, 'tat', slot) end
      break
    end
    local id, qs = popped[1], popped[2]
    local payload = redis.call('HGET', P .. 'body:' .. acct, id)
    local next = now
    if payload then
      if burst == 1 then
        -- Evenly spaced sends (see common.lua): the account is taken only when due, so
        -- its pause is over and `slot` (its score) is at most now. A send taken a little
        -- late (up to a twentieth of the spacing, and half the margin) counts at its
        -- slot, so that dispatch delays do not add up; later than that (an idle
        -- account, a worker far behind) it counts at now. Every `max`-th send adds the
        -- margin once: any `max + 1` sends are then a window plus at least half the
        -- margin apart, at a cost of one margin per `max` sends.
        local spacing = window / max
        if now - slot > math.min(MARGIN / 2, spacing / 20) then slot = now end
        next = slot + spacing
        if MARGIN > 0 and redis.call('HINCRBY', P .. 'st:' .. acct, 'n', 1) % max == 0 then next = next + MARGIN end
      else
        next = next_allowed(acct, record_send(acct, now))
      end
      redis.call('ZADD', P .. 'leases', now + lease, acct .. '\n' .. id .. '\n' .. qs)
      out[#out + 1] = acct; out[#out + 1] = id; out[#out + 1] = qs; out[#out + 1] = payload
      taken = taken + 1
    end
    if next > now or taken >= n then
      redis.call('ZADD', P .. 'ready', next, acct)
      break
    end
  end
end

local r = redis.call('ZRANGE', P .. 'ready', 0, 0, 'WITHSCORES')
local d = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
local next_due = -1
if #r > 0 then next_due = tonumber(r[2]) end
if #d > 0 and (next_due < 0 or tonumber(d[2]) < next_due) then next_due = tonumber(d[2]) end
return {now, next_due, out}
