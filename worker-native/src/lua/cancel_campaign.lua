-- Takes a canceled campaign's waiting messages off the schedule (those already taken
-- are refused by their ledger claim, or finish). ARGV after the common ones: account,
-- cid, qscore. Returns how many were waiting.
local acct, cid, qs = ARGV[ARG0 + 1], ARGV[ARG0 + 2], ARGV[ARG0 + 3]
local n = redis.call('LLEN', P .. 'cr:' .. cid)
redis.call('DEL', P .. 'cr:' .. cid)
redis.call('SREM', P .. 'campaigns', cid)
redis.call('ZREM', P .. 'q:' .. acct, '~' .. cid)
redis.call('ZREM', P .. 'delayed', acct .. '\n~' .. cid .. '\n' .. qs)
if n > 0 then campaign_done(cid, n) end
return n
