-- Marks the steps of a rebuild of the schedule from the ledger, after Redis lost its
-- data (the shard's epoch is missing; meanwhile `take` takes nothing from it). Every
-- step may be sent twice (a cluster client after a connection error) and does the
-- same the second time. ARGV after the common
-- ones: the step, a token of the rebuilding worker.
--   begin  takes the rebuild: one worker at a time, for 30 s, which each step renews
--          (should that worker die, another takes over);
--   lost   the ledger knows this schedule: it was lost, not new. Records when
--          (`lost_at`), and the longest lead a message is taken ahead of its slot (the
--          third argument, `lost_lead`): a message taken before the loss may still go
--          at its slot after it (see common.lua's `state`);
--   end    sets the epoch: the schedule is complete again.
-- Returns 1 when done, 0 when it is not this worker's to do (the epoch is there, or
-- another worker is rebuilding).
local step, token = ARGV[ARG0 + 1], ARGV[ARG0 + 2]
local lock = P .. 'recovering'
if step == 'begin' then
  if redis.call('EXISTS', P .. 'epoch') == 1 then return 0 end
  if redis.call('GET', lock) == token then return 1 end -- the same step, sent again
  if not redis.call('SET', lock, token, 'NX', 'PX', 30000) then return 0 end
  return 1
end
if redis.call('GET', lock) ~= token then return 0 end
if step == 'lost' then
  redis.call('MSET', P .. 'lost_at', now_ms(), P .. 'lost_lead', ARGV[ARG0 + 3])
  redis.call('PEXPIRE', lock, 30000)
  return 1
end
if step == 'renew' then
  redis.call('PEXPIRE', lock, 30000)
  return 1
end
redis.call('SET', P .. 'epoch', 'shards=' .. SHARDS)
redis.call('DEL', lock)
return 1
