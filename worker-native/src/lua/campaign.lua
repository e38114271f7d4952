-- Adds a campaign to its account's queue as one member, '~'..cid: its payload stored
-- once, its messages a list of "id\trecipient" that `take` works through in order. A
-- campaign seen before is a duplicate delivery and is dropped. One due later
-- (`sendAt`) waits in `delayed` and joins the queue when due, then goes at the
-- account's rate like any message. ARGV after the common ones: seen_ttl_s, account,
-- cid, qscore, due_ms, payload, then each "id\trecipient". Returns how many were added.
local now = now_ms()
local ttl, acct, cid, qs, due, payload = tonumber(ARGV[ARG0 + 1]), ARGV[ARG0 + 2], ARGV[ARG0 + 3], ARGV[ARG0 + 4], tonumber(ARGV[ARG0 + 5]), ARGV[ARG0 + 6]
if not redis.call('SET', P .. 'seen:' .. cid, 0, 'NX', 'EX', ttl) then return 0 end
local first = ARG0 + 7
for i = first, #ARGV, 1000 do
  redis.call('RPUSH', P .. 'cr:' .. cid, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local count = #ARGV - first + 1
redis.call('HSET', P .. 'c:' .. cid, 't', payload, 'left', count)
redis.call('SADD', P .. 'campaigns', cid)
if due > now then
  redis.call('ZADD', P .. 'delayed', due, acct .. '\n~' .. cid .. '\n' .. qs)
else
  redis.call('ZADD', P .. 'q:' .. acct, qs, '~' .. cid)
  ensure_ready(acct)
end
return count
