-- Enqueue one job unless the queue is full. Idempotent: a retried call (lost reply) with the
-- same job returns the entry it already added.
-- KEYS: jobs stream, job hash, image, deadlines zset
-- ARGV: image, job json, results stream (origin), max depth, image ttl, job ttl, deadline,
--       stream maxlen, job id
local jobs, h, img, deadlines = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', h) == 1 then
  if redis.call('HGET', h, 'job') == ARGV[2] then return redis.call('HGET', h, 'entry') end
  return redis.error_reply('job id in use')
end
if redis.call('XLEN', jobs) >= tonumber(ARGV[4]) then return false end
redis.call('SET', img, ARGV[1], 'EX', ARGV[5])
local e = redis.call('XADD', jobs, 'MAXLEN', '~', ARGV[8], '*', 'id', ARGV[9])
redis.call('HSET', h, 'job', ARGV[2], 'origin', ARGV[3], 'entry', e, 'tries', 0,
           'state', 'queued')
redis.call('EXPIRE', h, ARGV[6])
redis.call('ZADD', deadlines, ARGV[7], ARGV[9])
return e
