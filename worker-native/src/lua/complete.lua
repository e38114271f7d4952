-- Records what became of leased messages. ARGV after the common ones, per message:
-- kind, account, id, qscore, generation, delay_ms, payload, campaign id ('' if none),
-- taken_ms (Redis time of its take), slot_ms (the slot it was taken for), where kind is
--   done    finished (sent, or failed for good): forgotten everywhere, and its
--           campaign's content with its last message from the campaign's list;
--   refused refused by its ledger claim (canceled, or finished already): as done, and
--           the slot it was taken for goes back to its account, so that a message never
--           sent costs no send;
--   defer   its ledger claim is another worker's (a delivery under way): as retry, and
--           its slot goes back as a refused one's. Several refused or deferred of one
--           account come in descending slot order;
--   retry   back to its queue after delay_ms, with the new payload (attempts + 1);
--   pause   as retry, and the account sends nothing for delay_ms (gateway 429),
--           whoever holds the message now;
--   release given back unsent (shutdown, a claim too late, a take its replicas did not
--           acknowledge): straight back to its queue, and its slot back as a refused one's;
--   wait    as release, and the account sends nothing until delay_ms (a time, not a
--           delay: its turn at the gateway credential's limit, credential.lua).
-- Every kind but `done` carries the payload, so that a message the schedule lost while
-- it was held (Redis lost its data) goes back on it.
-- A message whose lease is gone (expired and reclaimed) is left to its new holder,
-- except `done`, which always forgets it. A completion of an older generation than the
-- newest enqueued (the user retried the message while this attempt was being
-- recorded, and the retry is already scheduled) touches nothing: the body, queue
-- entry and lease now belong to the newer generation. Returns the number of leases
-- released.
local now = now_ms()
local released = 0

-- A send that did not happen costs its account nothing. With evenly spaced sends, the
-- account's next slot (its `ready` score, or its `tat` while it rests) goes back to
-- `slot` if nothing was taken after it. With bursts, its entry leaves the log of sends
-- (and `tat` steps back when it was the newest), and the account's next allowed time is
-- read again.
local function refund_burst(acct, slot, max, window)
  local log = P .. 'win:' .. acct
  for i, v in ipairs(redis.call('LRANGE', log, 0, -1)) do
    if math.floor(tonumber(v)) == slot then
      redis.call('LSET', log, i - 1, '-')
      redis.call('LREM', log, 1, '-')
      local key = P .. 'st:' .. acct
      local tat = tonumber(redis.call('HGET', key, 'tat'))
      if i == 1 and tat then redis.call('HSET', key, 'tat', tat - (window + MARGIN) / max) end
      if redis.call('ZSCORE', P .. 'ready', acct) then redis.call('ZADD', P .. 'ready', 'XX', next_allowed(acct, state(acct)), acct) end
      return
    end
  end
end

local function refund(acct, slot)
  local max, window, burst = limit_of(acct)
  if burst ~= 1 then return refund_burst(acct, slot, max, window) end
  -- The next slot is a spacing after it, and the margin more after every `max`-th send.
  local function next_of(t)
    local d = t - slot - window / max
    return math.abs(d) < 1 or (MARGIN > 0 and math.abs(d - MARGIN) < 1)
  end
  local score = tonumber(redis.call('ZSCORE', P .. 'ready', acct))
  local key = P .. 'st:' .. acct
  if score and next_of(score) then
    redis.call('ZADD', P .. 'ready', 'XX', slot, acct)
  elseif not score and next_of(tonumber(redis.call('HGET', key, 'tat')) or 0) then
    redis.call('HSET', key, 'tat', slot)
  else
    return
  end
  if MARGIN > 0 then redis.call('HINCRBY', key, 'n', -1) end
end
-- The account sends nothing until `till` (ms): a gateway's 429, or its turn at the
-- credential's limit. A 429 is applied whoever holds the message now (a message taken
-- before Redis lost its data and put back here, or one whose lease another worker took
-- over): the answer is about the account, and a pause only ever delays.
local function pause_account(acct, till)
  keep_until(acct, pause_until(acct, till))
end
for i = ARG0 + 1, #ARGV, 10 do
  local kind, acct, id, qs, gen, delay, payload, cid, taken_at, slot = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]),
    tonumber(ARGV[i + 5]), ARGV[i + 6], ARGV[i + 7], tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9])
  local body_key = P .. 'body:' .. acct
  if (tonumber(redis.call('GET', P .. 'seen:' .. id)) or gen) <= gen then
    local member = acct .. '\n' .. id .. '\n' .. qs
    local held = redis.call('ZREM', P .. 'leases', member) == 1
    if held then released = released + 1 end
    if kind == 'done' or kind == 'refused' then
      -- Counted once: a second `done` (a duplicate delivery) finds no body.
      local body = redis.call('HGET', body_key, id)
      if body then
        redis.call('HDEL', body_key, id)
        if cid ~= '' and from_campaign_list(body) then campaign_done(cid, 1) end
      end
      redis.call('DEL', P .. 'seen:' .. id)
      if not held then -- requeued after its lease expired: take it out again
        redis.call('ZREM', P .. 'q:' .. acct, id)
        redis.call('ZREM', P .. 'delayed', member)
      end
      if kind == 'refused' and held then refund(acct, slot) end
    elseif not held and (loss() or 0) >= taken_at and redis.call('HEXISTS', body_key, id) == 0 then
      -- Taken before Redis lost its data, and nobody has it now: back on the schedule
      -- (a rebuild that read the ledger meanwhile may have put it back too: the same id
      -- and generation, so `seen` drops the second).
      redis.call('HSET', body_key, id, payload)
      redis.call('SET', P .. 'seen:' .. id, gen, 'EX', 1209600)
      redis.call('ZADD', P .. 'delayed', now + delay, member)
    elseif held and (kind == 'release' or kind == 'wait') then
      requeue(acct, id, qs)
      refund(acct, slot)
      if kind == 'wait' then pause_account(acct, delay) end
    elseif held then
      redis.call('HSET', body_key, id, payload)
      redis.call('ZADD', P .. 'delayed', now + delay, member)
      if kind == 'defer' then refund(acct, slot) end
    end
  end
  if kind == 'pause' then pause_account(acct, now + delay) end
end
return released
