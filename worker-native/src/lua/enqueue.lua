-- Adds messages to their accounts' queues. ARGV after the common ones: seen_ttl_s, then
-- per message: account, id, generation, qscore, payload, due_ms, campaign (its first
-- generation's campaign id, or ''). A message on the schedule already (it has a body)
-- with the same or a later generation is a duplicate delivery and is dropped (a marker
-- without a body is what a rebuild wiped); so is a campaign's first generation while
-- its campaign is on the schedule as one member (redelivered after a loss while a
-- rebuild put its messages back one by one: campaign.lua leaves out the others). A
-- message due later (`sendAt`) waits in `delayed`, as a retry's backoff does, and joins
-- its account's queue when due: from then on the account's limit applies as usual, so
-- a scheduled mass message goes at the account's rate, never in a burst.
-- Returns {added, deferred (accounts that must wait for their limit), {0-based
-- positions of the duplicates}}.
local now = now_ms()
local ttl = tonumber(ARGV[ARG0 + 1])
local added, deferred, dup_at = 0, 0, {}

local function duplicate(acct, id, gen, cid)
  if cid ~= '' and redis.call('EXISTS', P .. 'c:' .. cid) == 1 then return true end
  local key = P .. 'seen:' .. id
  local seen = tonumber(redis.call('SET', key, gen, 'EX', ttl, 'GET'))
  if seen and seen >= gen and redis.call('HEXISTS', P .. 'body:' .. acct, id) == 1 then
    redis.call('SET', key, seen, 'EX', ttl) -- keep the newer generation
    return true
  end
  return false
end

for i = ARG0 + 2, #ARGV, 7 do
  local acct, id, gen, qs, payload, due, cid = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5]), ARGV[i + 6]
  if duplicate(acct, id, gen, cid) then
    dup_at[#dup_at + 1] = (i - ARG0 - 2) / 7
  elseif due > now then
    redis.call('HSET', P .. 'body:' .. acct, id, payload)
    redis.call('ZADD', P .. 'delayed', due, acct .. '\n' .. id .. '\n' .. qs)
    added = added + 1
  else
    redis.call('HSET', P .. 'body:' .. acct, id, payload)
    redis.call('ZADD', P .. 'q:' .. acct, qs, id)
    if ensure_ready(acct) > now then deferred = deferred + 1 end
    added = added + 1
  end
end
return {added, deferred, dup_at}
