-- Shared by every schedule script (prepended to each). Each runs on one shard of the
-- schedule (schedule.rs): KEYS[1] names the shard (its epoch key) so that a cluster
-- routes the step to the node that holds it, and every key it touches is under the
-- shard's prefix P, which carries the shard's hash tag. Keys:
--   P..'ready'        ZSET account -> ms when it may next send (accounts with work, and
--                     those whose queue ran empty, until they are next due)
--   P..'q:'..acct     ZSET message id -> priority * 1e13 + accepted ms (most urgent, oldest first);
--                     a campaign waits there as one member '~'..campaign id
--   P..'body:'..acct  HASH message id -> payload (the queue message and its attempts), or,
--                     for a campaign's message taken from its list, '~'..cid..'\t'..recipient
--                     (then '^'..payload once an attempt of it came back: it still counts
--                     in its campaign's `left`)
--   P..'c:'..cid      HASH t (the campaign's payload without id and recipient: its content is
--                     stored once), left (its messages not done), removed with the last
--   P..'cr:'..cid     LIST the campaign's waiting messages, "id\trecipient", in order
--   P..'campaigns'    SET the campaigns whose list is not empty (for the backlog metric)
--   P..'epoch'        STRING "shards=N run=ID", set once the shard is complete: N is the shard
--                     count of the workers that made it, ID the run id of the Redis process that
--                     holds it. Missing (Redis lost its data, or is new) or of another process (a
--                     restart, perhaps from an older snapshot, or a replica promoted that may lack
--                     the last writes): a worker rebuilds the shard from the ledger (recover.lua)
--   P..'took:'..worker STRING a worker's last take (its token and answer), kept 10 s: the same
--                     take sent again gets it back
--   P..'lost_at'      STRING when the last loss was found, and P..'lost_lead' the longest lead of
--                     a take: an account whose state was lost sends no earlier than a spacing
--                     (a window, with bursts) after both
--   P..'st:'..acct    HASH tat (GCRA theoretical arrival time), pause (429 until, or held: control.lua), n
--                     (sends so far, burst 1); with burst 1, tat is written when the
--                     account leaves `ready` (while it is in `ready`, its score is its tat).
--                     An account with nothing waiting keeps it only while it still bounds a
--                     send (`rest`): it then expires, as its `win:` list does
--   P..'win:'..acct   LIST the account's last `max` send times, newest first
--   P..'held'         SET the accounts held (a held account with nothing waiting is in no
--                     other set: a rebuild finds its state here)
--   P..'limits'       HASH account -> "max window_ms burst" (per-account override)
--   P..'delayed'      ZSET "acct\nid\nqscore" -> ms when a retry is due
--   P..'leases'       ZSET "acct\nid\nqscore" -> ms when a worker's lease expires
--   P..'seen:'..id    STRING the newest generation enqueued, to drop duplicate deliveries
--                     from SQS (while the message is on the schedule: it has a body) and
--                     completions of an older generation; removed when the message is done
--                     (a later duplicate is refused by its ledger claim). A
--                     canceled campaign's stays until its TTL: a late copy of the campaign is
--                     then not scheduled
--
-- The limit (docs/design.md §6): never more than `max` sends in any rolling window of
-- `window + margin` ms. With burst 1 (the default) sends are spaced by window / max,
-- and every `max`-th send waits the margin once more, so that any `max + 1` sends are
-- a window and at least half the margin apart (take.lua says why half) at a cost of
-- one margin per `max` sends. With a burst, up to `burst` go back to back (GCRA at
-- (window + margin) / max) and a log of the last `max` sends enforces the rolling
-- window. Time is Redis's own clock.

local P = ARGV[1]
local DEF_MAX, DEF_WINDOW, DEF_BURST, MARGIN = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local SHARDS = ARGV[6] -- the shard count of the calling worker
local ARG0 = 6 -- script-specific arguments start after these

-- A pause that never ends: an account held by its user (control.lua).
local HOLD = 9007199254740991


-- Per-account limits, read once per script run (and not at all without overrides).
local limits_cache = {}
local any_override = redis.call('HLEN', P .. 'limits') > 0
local function limit_of(acct)
  local l = limits_cache[acct]
  if l then return l[1], l[2], l[3] end
  local max, window, burst = DEF_MAX, DEF_WINDOW, DEF_BURST
  local o = any_override and redis.call('HGET', P .. 'limits', acct)
  if o then
    local m, w, b = string.match(o, '^(%d+) (%d+) (%d+)$')
    if m then max, window, burst = tonumber(m), tonumber(w), math.max(1, tonumber(b)) end
  end
  limits_cache[acct] = {max, window, burst}
  return max, window, burst
end

-- Earliest time the account may send again, from its state {tat, pause}. With
-- burst 1 the spacing alone keeps any `max + 1` sends apart (take.lua); with bursts,
-- the log of its last `max` sends enforces the rolling window (plus the margin).
local function next_allowed(acct, tat, pause)
  local max, window, burst = limit_of(acct)
  window = window + MARGIN
  local t = (tat or 0) - (burst - 1) * window / max
  if burst > 1 then
    local oldest = redis.call('LINDEX', P .. 'win:' .. acct, max - 1)
    if oldest then t = math.max(t, tonumber(oldest) + window) end
  end
  return math.max(t, pause or 0)
end

-- Its state {tat, pause}. After Redis lost its data (all of it, or the last writes: a
-- restart from an older snapshot, a promoted replica) an account may have sent just
-- before the loss, or have a message taken before it still going at its slot, that
-- its state no longer shows: every such send is before `lost_at`, so no send earlier
-- than one spacing after it (a whole window with bursts, whose log may be lost too)
-- keeps the limit, whatever state survived. The loss marks are read once per script run.
local lost_cache
local function loss()
  if not lost_cache then
    local l = redis.call('MGET', P .. 'lost_at', P .. 'lost_lead')
    lost_cache = {tonumber(l[1]), tonumber(l[2]) or 0}
  end
  return lost_cache[1], lost_cache[2]
end

-- The earliest an account may send after the last loss: {tat floor (burst 1), pause
-- floor (bursts)}, or nil without a loss.
local function loss_floor(acct)
  local lost_at, lost_lead = loss()
  if not lost_at then return nil end
  local max, window, burst = limit_of(acct)
  if burst == 1 then return lost_at + lost_lead + (window + MARGIN) / max, 0 end
  return 0, lost_at + lost_lead + window + MARGIN
end

local function state(acct)
  local st = redis.call('HMGET', P .. 'st:' .. acct, 'tat', 'pause')
  local tat, pause = tonumber(st[1]), tonumber(st[2])
  local tat_floor, pause_floor = loss_floor(acct)
  if tat_floor then
    tat = math.max(tat or 0, tat_floor)
    pause = math.max(pause or 0, pause_floor)
  end
  return tat, pause
end

-- An account with nothing waiting keeps its state only while it bounds a send: until a
-- window (and the margin) after the later of its next allowed time (`tat`) and its
-- pause; a held account keeps it until it is released.
local function rest(acct, tat)
  local key = P .. 'st:' .. acct
  local max, window, burst = limit_of(acct)
  local pause = tonumber(redis.call('HGET', key, 'pause')) or 0
  if pause >= HOLD then
    redis.call('PERSIST', key)
    return
  end
  local t = tat or tonumber(redis.call('HGET', key, 'tat')) or 0
  local until_ms = math.ceil(math.max(t, pause, now_ms()) + window + MARGIN)
  redis.call('PEXPIREAT', key, until_ms)
  if burst > 1 then redis.call('PEXPIREAT', P .. 'win:' .. acct, until_ms) end
end

-- A state that expires (its account rests) is kept at least until `t` plus a window.
local function keep_until(acct, t)
  local key = P .. 'st:' .. acct
  local left = redis.call('PTTL', key)
  if left > 0 then
    local max, window = limit_of(acct)
    local until_ms = math.ceil(t + window + MARGIN)
    if until_ms > now_ms() + left then redis.call('PEXPIREAT', key, until_ms) end
  end
end

-- A gateway's 429: the account sends nothing before `till` (ms); a pause only ever
-- delays. A held account keeps it for when it is released (control.lua), whichever
-- came first, the hold or the pause (a rebuild puts both back). Returns the pause.
local function pause_until(acct, till)
  local key = P .. 'st:' .. acct
  local field = (tonumber(redis.call('HGET', key, 'pause')) or 0) >= HOLD and 'held_pause' or 'pause'
  local pause = math.max(tonumber(redis.call('HGET', key, field)) or 0, till)
  redis.call('HSET', key, field, pause)
  -- In `ready`, the score is when it may send: push it back (never forward).
  redis.call('ZADD', P .. 'ready', 'XX', 'GT', pause, acct)
  return pause
end

-- Records a send at `now` (with a burst); returns the account's new {tat, pause}.
local function record_send(acct, now)
  local max, window, burst = limit_of(acct)
  local tat, pause = state(acct)
  tat = math.max(tat or 0, now) + (window + MARGIN) / max
  redis.call('HSET', P .. 'st:' .. acct, 'tat', tat)
  if burst > 1 then
    redis.call('LPUSH', P .. 'win:' .. acct, now)
    redis.call('LTRIM', P .. 'win:' .. acct, 0, max - 1)
  end
  return tat, pause
end

-- Puts the account in the ready set if it has work and is not there yet; returns the
-- time it may send.
local function ensure_ready(acct)
  local s = redis.call('ZSCORE', P .. 'ready', acct)
  if s then return tonumber(s) end
  local t = next_allowed(acct, state(acct))
  redis.call('ZADD', P .. 'ready', t, acct)
  -- Working again: its state no longer expires (see `rest`).
  redis.call('PERSIST', P .. 'st:' .. acct)
  redis.call('PERSIST', P .. 'win:' .. acct)
  return t
end

-- Whether a queue member still has something to send: a message its body, a
-- campaign ('~'..cid) its list.
local function waiting(acct, id)
  if string.sub(id, 1, 1) == '~' then return redis.call('EXISTS', P .. 'cr:' .. string.sub(id, 2)) == 1 end
  return redis.call('HEXISTS', P .. 'body:' .. acct, id) == 1
end

local function requeue(acct, id, qs)
  if waiting(acct, id) then
    redis.call('ZADD', P .. 'q:' .. acct, qs, id)
    ensure_ready(acct)
    return 1
  end
  return 0
end

local function split(member)
  local acct, id, qs = string.match(member, '^(.*)\n([^\n]*)\n([^\n]*)$')
  return acct, id, qs
end

-- `count` more of a campaign's messages are done: with its last, its content and its
-- duplicate marker go.
local function campaign_done(cid, count)
  if redis.call('HINCRBY', P .. 'c:' .. cid, 'left', -count) <= 0 then
    redis.call('DEL', P .. 'c:' .. cid)
    -- A canceled campaign's marker stays until its TTL (cancel_campaign.lua).
    if redis.call('GET', P .. 'seen:' .. cid) ~= 'canceled' then redis.call('DEL', P .. 'seen:' .. cid) end
  end
end

-- Whether a payload is a campaign's message taken from its list, counted in the
-- campaign's `left`: its compact form ('~'..cid..'\t'..recipient), or, once an attempt
-- was retried, deferred or paused, its whole payload marked '^' (the worker marks
-- it: schedule.rs). A campaign's message retried by its user is a message of its own.
local function from_campaign_list(payload)
  if payload == false or payload == nil then return false end
  local first = string.sub(payload, 1, 1)
  return first == '~' or first == '^'
end

-- The campaign of such a payload (nil for any other): the compact form names it first,
-- the whole payload in its message's `campaignId`.
local function campaign_of(payload)
  if not from_campaign_list(payload) then return nil end
  if string.sub(payload, 1, 1) == '~' then return string.match(payload, '^~([^\t]*)') end
  return string.match(payload, '"campaignId":"([^"]*)"')
end
