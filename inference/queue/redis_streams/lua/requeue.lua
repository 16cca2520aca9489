-- Put a job back at the end of the queue (retry), or hand it back uncounted (shutdown).
-- KEYS: jobs stream, job hash
-- ARGV: entry id, group, handback ('1' or '0'), stream maxlen, job id
local jobs, h = KEYS[1], KEYS[2]
local e, group = ARGV[1], ARGV[2]
redis.call('XACK', jobs, group, e)
local state = redis.call('HGET', h, 'state')
if state ~= 'queued' then redis.call('XDEL', jobs, e); return state or 'gone' end
if redis.call('HGET', h, 'entry') ~= e then redis.call('XDEL', jobs, e); return 'stale' end
redis.call('XDEL', jobs, e)
local e2 = redis.call('XADD', jobs, 'MAXLEN', '~', ARGV[4], '*', 'id', ARGV[5])
redis.call('HSET', h, 'entry', e2)
if ARGV[3] == '1' then redis.call('HINCRBY', h, 'tries', -1) end
return 'requeued'
