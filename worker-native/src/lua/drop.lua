-- Takes canceled messages off the schedule (DELETE /{id} in the ledger first, then this
-- through the queue), so that a canceled message neither waits in Redis until its slot
-- nor costs one. ARGV after the common ones, per message: account, id, qscore,
-- generation, campaign id ('' if none), recipient. A message leased is left to its
-- holder: its ledger claim is refused, and its slot refunded (complete.lua). A
-- campaign's message not taken from the campaign's list yet is removed from the list.
-- Returns how many were taken off.
local dropped = 0
for i = ARG0 + 1, #ARGV, 6 do
  local acct, id, qs, gen, cid, recipient = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
  local member = acct .. '\n' .. id .. '\n' .. qs
  local newer = (tonumber(redis.call('GET', P .. 'seen:' .. id)) or gen) > gen
  if not newer and not redis.call('ZSCORE', P .. 'leases', member) then
    local body = redis.call('HGET', P .. 'body:' .. acct, id)
    local removed = 0
    if body then
      redis.call('HDEL', P .. 'body:' .. acct, id)
      redis.call('ZREM', P .. 'q:' .. acct, id)
      redis.call('ZREM', P .. 'delayed', member)
      removed = 1
    elseif cid ~= '' then
      removed = redis.call('LREM', P .. 'cr:' .. cid, 1, id .. '\t' .. recipient)
      if removed > 0 and redis.call('EXISTS', P .. 'cr:' .. cid) == 0 then
        -- Its list is empty now: the campaign leaves the queue.
        redis.call('SREM', P .. 'campaigns', cid)
        redis.call('ZREM', P .. 'q:' .. acct, '~' .. cid)
        redis.call('ZREM', P .. 'delayed', acct .. '\n~' .. cid .. '\n' .. qs)
      end
    end
    if removed > 0 then
      if cid ~= '' and (not body or from_campaign_list(body)) then campaign_done(cid, 1) end
      redis.call('DEL', P .. 'seen:' .. id)
      dropped = dropped + 1
    end
  end
end
return dropped
