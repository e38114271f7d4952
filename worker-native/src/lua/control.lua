-- Holds or releases accounts (POST /account/pause, /account/resume). ARGV after the
-- common ones: `since`, then per control: account, "pause"|"resume", at_ms. A control
-- older than the last one applied to its account is ignored (SQS may deliver late,
-- twice, or out of order; the ledger orders them first, see ingest.rs). Also "until",
-- at_ms: the account is paused until then at least (a 429's pause, put back by a
-- rebuild; a pause only delays, so its order does not matter).
--
-- `since` is the shard's last loss (`lost_at`, '' for none) as the caller read it
-- before it checked the controls against the ledger ('*': not checked, for "until"
-- only). A loss since then cleared the order the controls are kept in here (recover.lua
-- clears `ctl_at`): a control the ledger took before a newer one could then land after
-- it, and hold its account for ever. So nothing is applied and -1 is returned: the
-- caller checks the controls against the ledger again (the rebuild read the ledger after
-- the loss, so what it put back is at least as new). The same while the shard waits for
-- its rebuild (its epoch missing or another process's): what is applied now would be
-- cleared by the rebuild's `lost` step, which a hold the ledger's index does not show yet
-- would not survive. The rebuild's own holds come with 'r' before `since`.
-- Returns how many were applied.
--
-- A hold is a 429 pause that never ends: `pause` set to HOLD, so everything that
-- already respects a pause (next_allowed, ensure_ready, the ready set's score) holds
-- the account, and a message arriving meanwhile waits. The pause it replaced and the
-- account's tat (while in `ready` its score is its tat) are kept, and restored on
-- release: sends go on at the account's own spacing, with no catch-up burst. A held
-- account's state does not expire; released with nothing waiting, it rests (common.lua).
local since = ARGV[ARG0 + 1]
if since ~= '*' then
  local rebuild = string.sub(since, 1, 1) == 'r'
  if rebuild then since = string.sub(since, 2) end
  if since ~= (redis.call('GET', P .. 'lost_at') or '') then return -1 end
  if not rebuild and string.match(redis.call('GET', P .. 'epoch') or '', ' run=(%w+)$') ~= run_id() then return -1 end
end
local applied = 0
for i = ARG0 + 2, #ARGV, 3 do
  local acct, action, at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local key = P .. 'st:' .. acct
  if action == 'until' then
    pause_until(acct, at)
    if not redis.call('ZSCORE', P .. 'ready', acct) then rest(acct) end
    applied = applied + 1
  elseif at > (tonumber(redis.call('HGET', key, 'ctl_at')) or 0) then
    redis.call('HSET', key, 'ctl_at', at)
    local pause = tonumber(redis.call('HGET', key, 'pause')) or 0
    local score = tonumber(redis.call('ZSCORE', P .. 'ready', acct))
    if action == 'pause' and pause < HOLD then
      redis.call('HSET', key, 'held_pause', pause, 'pause', HOLD)
      redis.call('SADD', P .. 'held', acct)
      if score then
        redis.call('HSET', key, 'tat', score)
        redis.call('ZADD', P .. 'ready', HOLD, acct)
      end
    elseif action == 'resume' and pause >= HOLD then
      redis.call('SREM', P .. 'held', acct)
      redis.call('HSET', key, 'pause', tonumber(redis.call('HGET', key, 'held_pause')) or 0)
      redis.call('HDEL', key, 'held_pause')
      if score then
        redis.call('ZREM', P .. 'ready', acct)
        if redis.call('ZCARD', P .. 'q:' .. acct) > 0 then ensure_ready(acct) end
      end
    end
    -- An account with nothing waiting rests (a held one keeps its state).
    if not redis.call('ZSCORE', P .. 'ready', acct) then rest(acct) end
    applied = applied + 1
  end
end
return applied
