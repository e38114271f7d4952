-- Takes up to `n` messages whose slots fall by now + horizon, earliest-due account
-- first, the most urgent message of each, records each send in its account's limit
-- state at its slot and leases it to the caller, who sends it at its slot. No slot is
-- earlier than now + lead: the least time the caller needs to claim the message in the
-- ledger before it sends (a later slot is always safe for the limit: the spacing counts
-- from it); the horizon, at least the lead, is how far ahead the caller takes when its
-- claims run slow. A slot is moved only when it is earlier than the lead allows, so a
-- horizon that grows costs no idle time. Both are kept short: what is taken ahead is
-- committed (a 429 or a pause that comes meanwhile holds it back only in the worker
-- that took it). ARGV after the common ones: n, lease_ms, lead_ms, horizon_ms, the
-- calling worker's id and this take's token (the worker's last answer is kept 10 s
-- with its token: the same take sent again after a connection error gets it back
-- rather than taking more; a worker takes one at a time).
-- Returns {now, next_due (-1 when idle), {acct1, id1, qscore1, payload1, template1,
-- slot1, deadline1, from1, ...}, epoch (0 when complete; 1 when the shard's epoch is missing:
-- Redis lost its data or is new, and the shard must be rebuilt from the ledger first;
-- 2 + N when it was made by workers with N shards, not this worker's count)}: the
-- template is the campaign's payload when the payload is
-- a campaign's compact one ('' otherwise); the message may go from `from` (its slot, or
-- earlier when its account may send before: an idle account's, once claimed) until its
-- deadline (later, it could come closer than a window to the sends a window later).
local now = now_ms()
local n, lease, lead, ahead = tonumber(ARGV[ARG0 + 1]), tonumber(ARGV[ARG0 + 2]), tonumber(ARGV[ARG0 + 3]), tonumber(ARGV[ARG0 + 4])
local took, token = P .. 'took:' .. ARGV[ARG0 + 5], ARGV[ARG0 + 6] .. '\n'
local again = redis.call('GET', took)
if again and string.sub(again, 1, #token) == token then return cjson.decode(string.sub(again, #token + 1)) end

-- Without its epoch the shard is incomplete (Redis lost its data, or is new): nothing
-- is taken until a worker has rebuilt it from the ledger (recover.lua). An epoch set
-- by another Redis process means this one may lack what that one had (a restart from an
-- older snapshot, a replica promoted before it had the last writes): the same. An
-- epoch of workers with another shard count means two ways of splitting accounts, two
-- limits for one account: nothing is taken.
local epoch = redis.call('GET', P .. 'epoch')
if not epoch then return {now, -1, {}, 1} end
local made_by, run = string.match(epoch, '^shards=(%d+) run=(%w+)$')
if run ~= run_id() then
  redis.call('DEL', P .. 'epoch')
  return {now, -1, {}, 1}
end
if made_by ~= SHARDS then return {now, -1, {}, 2 + tonumber(made_by)} end
local earliest = now + lead
local horizon = now + math.max(lead, ahead)

-- Retries whose backoff is over, and scheduled messages now due (`sendAt`), join their
-- queues.
local due_retries = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, 500)
for _, member in ipairs(due_retries) do
  redis.call('ZREM', P .. 'delayed', member)
  local acct, id, qs = split(member)
  requeue(acct, id, qs)
end

-- The next message of a queue member: a message's own body, or the next of a
-- campaign's list (which goes back in the queue while more wait), given a body of
-- its own now that it is taken. Returns id, payload (nil when gone).
local function next_message(acct, q, id, qs)
  if string.sub(id, 1, 1) ~= '~' then return id, redis.call('HGET', P .. 'body:' .. acct, id) end
  local cid = string.sub(id, 2)
  local entry = redis.call('LPOP', P .. 'cr:' .. cid)
  if not entry then return id, nil end
  if redis.call('EXISTS', P .. 'cr:' .. cid) == 1 then
    redis.call('ZADD', q, qs, id)
  else
    redis.call('SREM', P .. 'campaigns', cid)
  end
  local mid, recipient = string.match(entry, '^([^\t]*)\t(.*)$')
  local payload = '~' .. cid .. '\t' .. recipient
  redis.call('HSET', P .. 'body:' .. acct, mid, payload)
  return mid, payload
end

local out = {}
local taken = 0
local due = redis.call('ZRANGEBYSCORE', P .. 'ready', '-inf', horizon, 'WITHSCORES', 'LIMIT', 0, n)
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
      rest(acct, slot)
      break
    end
    local id, payload = next_message(acct, q, popped[1], popped[2])
    local qs = popped[2]
    local next, at, lone_from = now, now, nil
    if payload then
      if burst == 1 then
        -- Evenly spaced sends (see common.lua): the account is taken only when due
        -- by the horizon, so its pause is over by its slot. A send taken a little late
        -- (its slot up to a twentieth of the spacing, and half the margin, before the
        -- earliest slot this take gives) keeps its slot, so that dispatch delays do not
        -- add up; later than that (an idle account, a worker far behind) it counts at
        -- the earliest slot. Every `max`-th send adds the margin
        -- once: any `max + 1` sends are then a window plus at least half the margin
        -- apart, at a cost of one margin per `max` sends.
        -- An idle account's lone message, whose slot was moved on only to give time
        -- for its claim, may go as soon as it is claimed: the spacing allows it from
        -- when its account may send (its `ready` score), and the next slots count from
        -- the later. One with messages behind it keeps their rhythm from its slot.
        -- (With bursts, the log holds the slot itself.)
        local spacing = window / max
        if earliest - slot > math.min(MARGIN / 2, spacing / 20) then
          if redis.call('ZCARD', q) == 0 then lone_from = math.max(slot, now) end
          slot = earliest
        end
        at = slot
        next = at + spacing
        if MARGIN > 0 and redis.call('HINCRBY', P .. 'st:' .. acct, 'n', 1) % max == 0 then next = next + MARGIN end
      else
        at = math.max(earliest, slot)
        next = next_allowed(acct, record_send(acct, at))
      end
      local from = lone_from or at
      redis.call('ZADD', P .. 'leases', at + lease, acct .. '\n' .. id .. '\n' .. qs)
      local template = ''
      if string.sub(payload, 1, 1) == '~' then
        template = redis.call('HGET', P .. 'c:' .. string.match(payload, '^~([^\t]*)'), 't') or ''
      end
      -- It may go until half the margin after its slot (a take a little late keeps its
      -- slot, and the worker's own delays come on top): the other half of the
      -- margin is for the way to the provider, whose time varies (common.lua).
      for _, v in ipairs({acct, id, qs, payload, template, tostring(math.floor(at)), tostring(math.floor(at + MARGIN / 2)), tostring(math.ceil(math.min(from, at)))}) do out[#out + 1] = v end
      taken = taken + 1
    end
    if next > horizon or taken >= n then
      redis.call('ZADD', P .. 'ready', next, acct)
      break
    end
    slot = next -- the account's next message, in the same take
  end
end

local r = redis.call('ZRANGE', P .. 'ready', 0, 0, 'WITHSCORES')
local d = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
local next_due = -1
if #r > 0 then next_due = tonumber(r[2]) end
if #d > 0 and (next_due < 0 or tonumber(d[2]) < next_due) then next_due = tonumber(d[2]) end
local answer = {now, next_due, out, 0}
if taken > 0 then redis.call('SET', took, token .. cjson.encode(answer), 'PX', 10000) end
return answer
