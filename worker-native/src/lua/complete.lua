-- Records what became of leased messages. ARGV after the common ones, per message:
-- kind, account, id, qscore, generation, delay_ms, payload, campaign id ('' if none),
-- taken_ms (Redis time of its take), where kind is
--   done    finished (sent, failed for good, or refused by its ledger claim):
--           forgotten everywhere, and its campaign's content with its last message;
--   retry   back to its queue after delay_ms, with the new payload (attempts + 1);
--   pause   as retry, and the account sends nothing for delay_ms (gateway 429);
--   release given back unsent (shutdown): straight back to its queue.
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
for i = ARG0 + 1, #ARGV, 9 do
  local kind, acct, id, qs, gen, delay, payload, cid, taken_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), ARGV[i + 6], ARGV[i + 7], tonumber(ARGV[i + 8])
  local body_key = P .. 'body:' .. acct
  if (tonumber(redis.call('GET', P .. 'seen:' .. id)) or gen) <= gen then
    local member = acct .. '\n' .. id .. '\n' .. qs
    local held = redis.call('ZREM', P .. 'leases', member) == 1
    if held then released = released + 1 end
    if kind == 'done' then
      -- Counted once: a second `done` (a duplicate delivery) finds no body.
      if redis.call('HDEL', body_key, id) == 1 and cid ~= '' then campaign_done(cid, 1) end
      redis.call('DEL', P .. 'seen:' .. id)
      if not held then -- requeued after its lease expired: take it out again
        redis.call('ZREM', P .. 'q:' .. acct, id)
        redis.call('ZREM', P .. 'delayed', member)
      end
    elseif not held and (loss() or 0) > taken_at and redis.call('HEXISTS', body_key, id) == 0 then
      -- Taken before Redis lost its data, and nobody has it now: back on the schedule
      -- (a rebuild that read the ledger meanwhile may have put it back too: the same id
      -- and generation, so `seen` drops the second).
      redis.call('HSET', body_key, id, payload)
      redis.call('SET', P .. 'seen:' .. id, gen, 'EX', 1209600)
      redis.call('ZADD', P .. 'delayed', now + delay, member)
    elseif held and kind == 'release' then
      requeue(acct, id, qs)
    elseif held then
      redis.call('HSET', body_key, id, payload)
      redis.call('ZADD', P .. 'delayed', now + delay, member)
      if kind == 'pause' then
        local key = P .. 'st:' .. acct
        local pause = math.max(tonumber(redis.call('HGET', key, 'pause')) or 0, now + delay)
        redis.call('HSET', key, 'pause', pause)
        -- In `ready`, the score is when it may send: push it back (never forward).
        redis.call('ZADD', P .. 'ready', 'XX', 'GT', pause, acct)
      end
    end
  end
end
return released
