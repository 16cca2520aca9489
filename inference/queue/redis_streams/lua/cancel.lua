-- Cancel a queued job: its entry, image and data go; only its state stays, briefly.
-- KEYS: jobs stream, job hash, image, deadlines zset, queued-bytes counter
-- ARGV: group, final-state ttl, job id
local jobs, h, img, deadlines, bytes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('HGET', h, 'state') ~= 'queued' then return 0 end
redis.call('HSET', h, 'state', 'cancelled')
local e = redis.call('HGET', h, 'entry')
redis.call('XACK', jobs, ARGV[1], e)
redis.call('XDEL', jobs, e)
redis.call('HDEL', h, 'job')
redis.call('EXPIRE', h, ARGV[2])
local size = redis.call('HGET', h, 'size')
if size then redis.call('DECRBY', bytes, size); redis.call('HDEL', h, 'size') end
redis.call('DEL', img)
redis.call('ZREM', deadlines, ARGV[3])
return 1
