-- Marks the steps of a rebuild of the schedule from the ledger, after Redis lost its
-- data (the shard's epoch is missing; meanwhile `take` takes nothing from it). Every
-- step may be sent twice (a cluster client after a connection error) and does the
-- same the second time. ARGV after the common
-- ones: the step, a token of the rebuilding worker.
--   begin  takes the rebuild: one worker at a time, for 5 s, which each step (and each
--          page of the ledger read back) renews: should that worker die, another takes
--          over within 5 s (a shard waits for its rebuild: its accounts send nothing);
--   lost   records when the loss was found (`lost_at`), and the longest lead a message
--          is taken ahead of its slot (the third argument, `lost_lead`): a message taken
--          before the loss may still go at its slot after it (see common.lua's `state`).
--          And it clears what the shard still holds: the ledger is the truth, and what a
--          Redis restarted from an older snapshot (or a replica promoted late) holds may
--          be finished or canceled since (each would cost its account a claim refused,
--          and a hold released since would hold it for ever); what arrived since the loss
--          is in the ledger too. What only delays an account (its state's next allowed
--          time and 429 pause, its log of sends) is kept. The markers of what it held go with it (a marker left
--          without a body drops nothing: enqueue.lua); the limit overrides and a canceled
--          campaign's marker stay. Run for every
--          rebuild: a new Redis and a lost one look the same, and the floor costs a new
--          one a spacing once;
--   lost_keep  as lost, without clearing: without the ledger the shard is the only copy;
--   end    sets the epoch (the shard count and this Redis process's run id): the
--          schedule is complete again.
-- Returns 1 when done, 0 when it is not this worker's to do (the epoch is there, or
-- another worker is rebuilding).
local step, token = ARGV[ARG0 + 1], ARGV[ARG0 + 2]
local lock = P .. 'recovering'
local LOCK_MS = 5000
if step == 'begin' then
  if redis.call('EXISTS', P .. 'epoch') == 1 then return 0 end
  if redis.call('GET', lock) == token then return 1 end -- the same step, sent again
  if not redis.call('SET', lock, token, 'NX', 'PX', LOCK_MS) then return 0 end
  return 1
end
if redis.call('GET', lock) ~= token then return 0 end
if step == 'lost' or step == 'lost_keep' then
  redis.call('MSET', P .. 'lost_at', now_ms(), P .. 'lost_lead', ARGV[ARG0 + 3])
  lost_cache = nil
  -- Without the ledger (LEDGER_ENABLED=false) what the shard holds is the only copy.
  if step == 'lost_keep' then
    redis.call('PEXPIRE', lock, LOCK_MS)
    return 1
  end
  local accounts, campaigns = {}, {}
  for _, acct in ipairs(redis.call('ZRANGE', P .. 'ready', 0, -1)) do accounts[acct] = true end
  for _, acct in ipairs(redis.call('SMEMBERS', P .. 'held')) do accounts[acct] = true end
  for _, set in ipairs({'delayed', 'leases'}) do
    for _, member in ipairs(redis.call('ZRANGE', P .. set, 0, -1)) do
      local acct, id = split(member)
      accounts[acct] = true
      if string.sub(id, 1, 1) == '~' then campaigns[string.sub(id, 2)] = true end
    end
  end
  for _, cid in ipairs(redis.call('SMEMBERS', P .. 'campaigns')) do campaigns[cid] = true end
  for acct in pairs(accounts) do
    -- A campaign whose list ran empty is in none of the sets above while messages of
    -- it are still out (taken, or back from an attempt): found through them, its
    -- content and count go too (else they stay for ever: nothing counts them down).
    local bodies = redis.call('HGETALL', P .. 'body:' .. acct)
    for i = 1, #bodies, 2 do
      redis.call('UNLINK', P .. 'seen:' .. bodies[i])
      local cid = campaign_of(bodies[i + 1])
      if cid then campaigns[cid] = true end
    end
    redis.call('UNLINK', P .. 'q:' .. acct, P .. 'body:' .. acct)
    -- What only delays its account stays: its next allowed time, its log of sends, a
    -- 429's pause (one met after the loss, before this step, may not be in what the
    -- rebuild reads from the ledger). A hold goes: the ledger's holds come back, and
    -- one released since would hold the account for ever.
    local key = P .. 'st:' .. acct
    if (tonumber(redis.call('HGET', key, 'pause')) or 0) >= HOLD then
      redis.call('HSET', key, 'pause', tonumber(redis.call('HGET', key, 'held_pause')) or 0)
      redis.call('HDEL', key, 'held_pause')
    end
    -- And the time of the last control applied: the ledger's hold comes back with the
    -- same time, which would otherwise be taken for a control seen already (and the
    -- account sent while held). Controls older than the ledger's never reach here (the
    -- ledger refuses them first: ingest.rs).
    redis.call('HDEL', key, 'ctl_at')
    -- Out of every set now: its state expires as a resting account's does (kept while
    -- it bounds a send), unless the rebuild puts work or a hold back (which keep it).
    -- Left as it was, the state of an account that was in `ready`, or held, would stay
    -- for ever (neither expires).
    rest(acct)
  end
  for cid in pairs(campaigns) do
    if redis.call('GET', P .. 'seen:' .. cid) ~= 'canceled' then redis.call('UNLINK', P .. 'seen:' .. cid) end
    redis.call('UNLINK', P .. 'c:' .. cid, P .. 'cr:' .. cid)
  end
  redis.call('UNLINK', P .. 'ready', P .. 'delayed', P .. 'leases', P .. 'campaigns', P .. 'held')
  redis.call('PEXPIRE', lock, LOCK_MS)
  return 1
end
if step == 'renew' then
  redis.call('PEXPIRE', lock, LOCK_MS)
  return 1
end
redis.call('SET', P .. 'epoch', 'shards=' .. SHARDS .. ' run=' .. run_id())
redis.call('DEL', lock)
return 1
