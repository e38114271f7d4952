-- Time and identity of the Redis process a script runs on, prepended to every script
-- (the schedule's, with common.lua, and the credential's).

-- Redis's own clock, in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The run id of this Redis process: a restart or a promoted replica has another.
local function run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
end
