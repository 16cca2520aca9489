-- Expire one job past its deadline: the submitter gets an "expired" outcome.
-- KEYS: jobs stream, job hash, image, deadlines zset, results stream (origin)
-- ARGV: group, now, stream maxlen, results ttl, final-state ttl, job id
local jobs, h, img, deadlines, origin = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[6]
local due = redis.call('ZSCORE', deadlines, id)
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', deadlines, id)
if redis.call('HGET', h, 'state') ~= 'queued' then return 0 end
if redis.call('HGET', h, 'origin') ~= origin then return redis.error_reply('origin mismatch') end
local e = redis.call('HGET', h, 'entry')
redis.call('XACK', jobs, ARGV[1], e)
redis.call('XDEL', jobs, e)
redis.call('HSET', h, 'state', 'expired')
redis.call('XADD', origin, 'MAXLEN', '~', ARGV[3], '*', 'id', id, 'status', 'expired',
           'job', redis.call('HGET', h, 'job'), 'tries', redis.call('HGET', h, 'tries'),
           'result', '', 'heatmap', '')
redis.call('EXPIRE', origin, ARGV[4])
redis.call('HDEL', h, 'job')
redis.call('EXPIRE', h, ARGV[5])
redis.call('DEL', img)
return 1
