-- Adds a campaign to its account's queue as one member, '~'..cid: its payload stored
-- once, its messages a list of "id\trecipient" that `take` works through in order. A
-- campaign seen before is a duplicate delivery and is dropped. One due later
-- (`sendAt`) waits in `delayed` and joins the queue when due, then goes at the
-- account's rate like any message. ARGV after the common ones: seen_ttl_s, account,
-- cid, qscore, due_ms, payload, then each "id\trecipient". Returns how many were added.
--
-- A message of it on the schedule already is left out: a rebuild from the ledger (the
-- campaign's marker lost with the rest) put it back as a message of its own, and a
-- second copy would cost its account a refused claim, a turn with nothing sent
-- (enqueue.lua leaves out the rebuild's copies when the campaign came first).
local now = now_ms()
local ttl, acct, cid, qs, due, payload = tonumber(ARGV[ARG0 + 1]), ARGV[ARG0 + 2], ARGV[ARG0 + 3], ARGV[ARG0 + 4], tonumber(ARGV[ARG0 + 5]), ARGV[ARG0 + 6]
if not redis.call('SET', P .. 'seen:' .. cid, 0, 'NX', 'EX', ttl) then return 0 end
local first = ARG0 + 7
local entries = {}
local bodies = P .. 'body:' .. acct
local check = redis.call('HLEN', bodies) > 0
for i = first, #ARGV do
  if not (check and redis.call('HEXISTS', bodies, string.match(ARGV[i], '^[^\t]*')) == 1) then entries[#entries + 1] = ARGV[i] end
end
local count = #entries
if count == 0 then
  -- Nothing of it to add: no content and count to keep, and no marker either (its
  -- last message done would have taken it away; the ledger's `scheduled` flag stops a
  -- later copy of the campaign).
  redis.call('DEL', P .. 'seen:' .. cid)
  return 0
end
for i = 1, count, 1000 do
  redis.call('RPUSH', P .. 'cr:' .. cid, unpack(entries, i, math.min(i + 999, count)))
end
redis.call('HSET', P .. 'c:' .. cid, 't', payload, 'left', count)
redis.call('SADD', P .. 'campaigns', cid)
if due > now then
  redis.call('ZADD', P .. 'delayed', due, acct .. '\n~' .. cid .. '\n' .. qs)
else
  redis.call('ZADD', P .. 'q:' .. acct, qs, '~' .. cid)
  ensure_ready(acct)
end
return count
