-- Enqueue one job unless the queue is full. Idempotent: a retried call (lost reply) with the
-- same job returns the entry it already added.
-- The queue is bounded by count and by the bytes of its images, so that Redis, run with
-- maxmemory and noeviction, never has to refuse or evict a job it already accepted.
-- KEYS: jobs stream, job hash, image, deadlines zset, queued-bytes counter
-- ARGV: image, job json, results stream (origin), max depth, image ttl, job ttl, deadline,
--       stream maxlen, job id, max queued bytes, the submitter's results ttl (for finish
--       and expire: a batch CLI's results expire soon, the bot's later)
local jobs, h, img, deadlines, bytes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', h) == 1 then
  if redis.call('HGET', h, 'job') == ARGV[2] then return redis.call('HGET', h, 'entry') end
  return redis.error_reply('job id in use')
end
local depth = redis.call('XLEN', jobs)
if depth >= tonumber(ARGV[4]) then return false end
if depth == 0 then redis.call('DEL', bytes) end  -- nothing queued: nothing counted
local size = string.len(ARGV[1])
local used = tonumber(redis.call('GET', bytes) or '0')
if depth > 0 and used + size > tonumber(ARGV[10]) then return false end
redis.call('INCRBY', bytes, size)
redis.call('SET', img, ARGV[1], 'EX', ARGV[5])
local e = redis.call('XADD', jobs, 'MAXLEN', '~', ARGV[8], '*', 'id', ARGV[9])
redis.call('HSET', h, 'job', ARGV[2], 'origin', ARGV[3], 'entry', e, 'tries', 0,
           'state', 'queued', 'size', size, 'rttl', ARGV[11])
redis.call('EXPIRE', h, ARGV[6])
redis.call('ZADD', deadlines, ARGV[7], ARGV[9])
return e
