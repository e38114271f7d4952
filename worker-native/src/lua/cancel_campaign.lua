-- Takes a canceled campaign's waiting messages off the schedule (those already taken
-- are refused by their ledger claim, or finish), and keeps its duplicate marker until
-- its TTL: a copy of the campaign that comes later (one being fanned out while it was
-- canceled) is then not scheduled. ARGV after the common ones: account, cid, qscore,
-- the marker's TTL in seconds. Returns how many were waiting.
local acct, cid, qs = ARGV[ARG0 + 1], ARGV[ARG0 + 2], ARGV[ARG0 + 3]
local n = redis.call('LLEN', P .. 'cr:' .. cid)
redis.call('DEL', P .. 'cr:' .. cid)
redis.call('SREM', P .. 'campaigns', cid)
redis.call('ZREM', P .. 'q:' .. acct, '~' .. cid)
redis.call('ZREM', P .. 'delayed', acct .. '\n~' .. cid .. '\n' .. qs)
if n > 0 then campaign_done(cid, n) end
redis.call('SET', P .. 'seen:' .. cid, 'canceled', 'EX', tonumber(ARGV[ARG0 + 4]))
return n
