"""The job queue on Redis Streams: any number of workers on any number of machines, one Redis.

- `keys`: the key layout (one hash tag per queue: cluster-safe scripts).
- `submitter`: `RedisSubmitter`, the `JobQueue` side (bot, batch CLI).
- `worker`: `RedisJobSource`, the `JobSource` side (workers).
- `connection`: the client with redis-py's `Retry`/backoff, the Lua scripts (`lua/*.lua`, each
  key through KEYS[]), the deadline sweep both sides run.
"""

from .keys import Keys
from .submitter import RedisSubmitter
from .worker import RedisJobSource, default_consumer_name

__all__ = ["Keys", "RedisJobSource", "RedisSubmitter", "default_consumer_name"]
