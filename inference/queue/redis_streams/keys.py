"""The key layout of the Redis Streams queue: every key name in one place.

All keys of one queue share the hash tag `{prefix}`, so every Lua script (which names each key
it touches in KEYS[]) stays inside one hash slot: the queue runs unchanged on Redis Cluster.
A queue is one stream, so it lives on one shard; run several prefixes to spread load.

- `{p}:jobs`               stream of job entries `{id}`, read by the consumer group "workers".
                           Entries are deleted when their job ends, so XLEN is the queue depth;
                           MAXLEN ~ is only a safety net.
- `{p}:img:{id}`           the image bytes, TTL `image_ttl_s`, deleted when the job ends.
- `{p}:job:{id}`           hash: job JSON, results stream, current entry id, tries, state
                           ("queued" until it becomes done/dead/expired/cancelled); TTL. When
                           the job ends only the state stays, for `FINAL_STATE_TTL_S`.
- `{p}:bytes`              the bytes of the images of queued jobs (the queue's memory bound).
- `{p}:deadlines`          sorted set id -> deadline; whoever runs housekeeping expires due
                           jobs, so a person gets an "expired" answer even with no worker up.
- `{p}:results:{name}`     stream of outcomes for one submitter (the bot, one CLI batch), read
                           through the consumer group `{name}`; an outcome is deleted once
                           acknowledged (it holds health data); trimmed, with a TTL.
- `{p}:dead`               dead-letter stream (trimmed, TTL): jobs that failed `max_tries`
                           times, without their routing data.
- `{p}:sent:{id}`          SET NX marker that makes delivery to a chat idempotent; TTL.
- `{p}:worker:{consumer}`  heartbeat of one worker; TTL 3 heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass

WORKERS_GROUP = "workers"
# After a job ends its hash keeps only its state (no job data), so that a late worker or a late
# cancel sees it ended; then it expires.
FINAL_STATE_TTL_S = 600


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, e.g. `Keys("hbscreen").job("abc")` -> "{hbscreen}:job:abc"."""

    prefix: str = "hbscreen"

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def jobs(self) -> str:
        return f"{self.tag}:jobs"

    @property
    def deadlines(self) -> str:
        return f"{self.tag}:deadlines"

    @property
    def queued_bytes(self) -> str:
        return f"{self.tag}:bytes"

    @property
    def dead(self) -> str:
        return f"{self.tag}:dead"

    def job(self, job_id: str) -> str:
        return f"{self.tag}:job:{job_id}"

    def image(self, job_id: str) -> str:
        return f"{self.tag}:img:{job_id}"

    def results(self, submitter: str) -> str:
        return f"{self.tag}:results:{submitter}"

    def sent(self, job_id: str) -> str:
        return f"{self.tag}:sent:{job_id}"

    def worker(self, consumer: str) -> str:
        return f"{self.tag}:worker:{consumer}"

    def pattern(self, kind: str) -> str:
        """A SCAN pattern for one kind of key ("img", "job", "worker", ...)."""
        return f"{self.tag}:{kind}:*"  # braces are not special in Redis glob patterns
