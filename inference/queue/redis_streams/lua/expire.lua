-- Expire one job past its deadline: the submitter gets an "expired" outcome.
-- KEYS: jobs stream, job hash, image, deadlines zset, results stream (origin), queued-bytes
--       counter
-- ARGV: group, now, stream maxlen, results ttl (unless the job names its submitter's own), final-state ttl, job id
local jobs, h, img, deadlines, origin, bytes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
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
redis.call('EXPIRE', origin, redis.call('HGET', h, 'rttl') or ARGV[4])
redis.call('HDEL', h, 'job')
redis.call('EXPIRE', h, ARGV[5])
local size = redis.call('HGET', h, 'size')
if size then redis.call('DECRBY', bytes, size); redis.call('HDEL', h, 'size') end
redis.call('DEL', img)
return 1
