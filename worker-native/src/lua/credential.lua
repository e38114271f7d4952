-- The limit of the gateway credential (the vendor's API key every account sends
-- through): grants of send times, in turn, to the messages of any account of any worker
-- (docs/design.md §6, "The credential's limit"). Runs on the credential's own slot, apart
-- from the schedule's shards (it is not prepended with common.lua).
-- KEYS: the credential's state (HASH run: the Redis process that holds it, tat: its
-- last grant), its reservations (HASH account -> grant ms).
-- ARGV: spacing (ms between two grants: (window + margin) / max), late (ms a send may
-- follow its grant), floor (ms after a loss before the first grant), then per message:
-- account, from, deadline (ms from now: when it may go at the earliest and the latest).
--
-- Grants are evenly spaced, each one spacing after the last given (GCRA with a burst of
-- one): any `max + 1` are a window and the margin apart, and a send goes between its
-- grant and `late` (half the margin) after it, so any `max + 1` sends are a window apart
-- at the vendor with half the margin left for the way there. A message whose grant falls
-- after its deadline does not go: the grant is kept for its account (reserved) and its
-- account waits until then (complete.lua's `wait`); that account's next message to ask
-- takes it. So each account waiting holds one place in the line, in the order they
-- asked: none is passed over, and a busy account (which asks again only once its turn
-- came) never holds a quiet one back by more than one turn per account waiting.
--
-- Returns, per message, {grant, 1 when it goes then or 0 when it waits, the latest it may
-- go} (ms from now).
local now = now_ms()
local state, reserved = KEYS[1], KEYS[2]
local spacing, late, floor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

-- A Redis that lost the state (new, restarted, a replica promoted) does not know the
-- last grants: one given before may still be sent up to `floor` from now. The next is
-- a spacing after that, as it would have been.
local run = run_id()
local st = redis.call('HMGET', state, 'run', 'tat')
local tat = tonumber(st[2]) or 0
if st[1] ~= run then
  tat = math.max(tat, now + floor)
  redis.call('DEL', reserved)
  redis.call('HSET', state, 'run', run, 'tat', tat)
end

local out = {}
for i = 4, #ARGV, 3 do
  local acct, from, deadline = ARGV[i], now + tonumber(ARGV[i + 1]), now + tonumber(ARGV[i + 2])
  local grant, go, base
  local r = tonumber(redis.call('HGET', reserved, acct))
  if r and r + late < from then
    r = nil -- its account came too late for it: the place is lost (never over the limit)
    redis.call('HDEL', reserved, acct)
  end
  if r then
    grant, go, base = math.max(r, from), r <= deadline and 1 or 0, r
    if go == 1 then redis.call('HDEL', reserved, acct) end
  else
    tat = math.max(tat + spacing, from)
    grant, go, base = tat, tat <= deadline and 1 or 0, tat
    if go == 0 then redis.call('HSET', reserved, acct, tat) end
  end
  out[#out + 1] = {math.ceil(grant - now), go, math.floor(base + late - now)}
end
redis.call('HSET', state, 'tat', tat)
-- Reservations are all before the last grant: an idle credential forgets them.
redis.call('PEXPIREAT', reserved, math.ceil(tat + late + 1000))
return out
