-- Publish a job's outcome once: unless it was cancelled, expired or finished meanwhile.
-- KEYS: jobs stream, job hash, image, deadlines zset, results stream (origin), dead letters,
--       queued-bytes counter
-- ARGV: entry id, group, status, result json, heatmap, stream maxlen, results ttl (unless the job names its submitter's own),
--       dead-letter reason, dead-letter job json, final-state ttl, job id
local jobs, h, img, deadlines, origin, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local bytes = KEYS[7]
local e, group, status, id = ARGV[1], ARGV[2], ARGV[3], ARGV[11]
redis.call('XACK', jobs, group, e)
redis.call('XDEL', jobs, e)
local state = redis.call('HGET', h, 'state')
if state ~= 'queued' then return state or 'gone' end
if redis.call('HGET', h, 'origin') ~= origin then return redis.error_reply('origin mismatch') end
local current = redis.call('HGET', h, 'entry')
redis.call('XACK', jobs, group, current)
redis.call('XDEL', jobs, current)
redis.call('HSET', h, 'state', status)
local tries = redis.call('HGET', h, 'tries')
redis.call('XADD', origin, 'MAXLEN', '~', ARGV[6], '*', 'id', id, 'status', status,
           'job', redis.call('HGET', h, 'job'), 'tries', tries, 'result', ARGV[4],
           'heatmap', ARGV[5])
redis.call('EXPIRE', origin, redis.call('HGET', h, 'rttl') or ARGV[7])
if status == 'dead' then
  redis.call('XADD', dead, 'MAXLEN', '~', ARGV[6], '*', 'id', id, 'job', ARGV[9],
             'tries', tries, 'reason', ARGV[8])
  redis.call('EXPIRE', dead, ARGV[7])
end
redis.call('HDEL', h, 'job')
redis.call('EXPIRE', h, ARGV[10])
local size = redis.call('HGET', h, 'size')
if size then redis.call('DECRBY', bytes, size); redis.call('HDEL', h, 'size') end
redis.call('DEL', img)
redis.call('ZREM', deadlines, id)
return status
