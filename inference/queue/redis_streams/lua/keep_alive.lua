-- Refresh the idle time of entries this consumer still owns (never steal one back).
-- KEYS: jobs stream
-- ARGV: group, consumer, entry ids...
local jobs, group, consumer = KEYS[1], ARGV[1], ARGV[2]
for i = 3, #ARGV do
  local p = redis.call('XPENDING', jobs, group, ARGV[i], ARGV[i], 1, consumer)
  if #p > 0 then
    redis.call('XCLAIM', jobs, group, consumer, 0, ARGV[i], 'JUSTID')
  end
end
return 0
