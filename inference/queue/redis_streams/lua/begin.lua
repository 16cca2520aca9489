-- A worker starts on a stream entry: count the try and hand out job, origin and image, unless
-- the job already ended or the entry is stale (then drop the entry).
-- KEYS: jobs stream, job hash, image
-- ARGV: entry id, group
local jobs, h, img = KEYS[1], KEYS[2], KEYS[3]
local e, group = ARGV[1], ARGV[2]
local state = redis.call('HGET', h, 'state')
if state ~= 'queued' or redis.call('HGET', h, 'entry') ~= e then
  redis.call('XACK', jobs, group, e)
  redis.call('XDEL', jobs, e)
  return {'skip', state or 'gone'}
end
local tries = redis.call('HINCRBY', h, 'tries', 1)
return {'run', tries, redis.call('HGET', h, 'job'), redis.call('HGET', h, 'origin'),
        redis.call('GET', img)}
