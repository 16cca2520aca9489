#!/bin/sh
# Start Redis with its users from the environment: the ACL file (password hashes only) is
# written to /tmp, a memory filesystem, never to the data volume or the image.
#   start.sh [redis.conf [redis-server options...]]
#   REDIS_BOT_PASSWORD     the bot (queue + its records; may rewrite the AOF)
#   REDIS_WORKER_PASSWORD  the workers (queue keys only)
# Use hex passwords (openssl rand -hex 32): they go into REDIS_URL unescaped.
set -eu
: "${REDIS_BOT_PASSWORD:?set REDIS_BOT_PASSWORD}"
: "${REDIS_WORKER_PASSWORD:?set REDIS_WORKER_PASSWORD}"
CONF="${1:-/etc/redis/redis.conf}"
[ $# -gt 0 ] && shift
ACL_FILE="${REDIS_ACL_FILE:-/tmp/users.acl}"
umask 077
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
# Both users: every command but the dangerous and administrative ones, on their own keys.
COMMON="resetchannels -@all +@all -@dangerous -@admin"
cat > "$ACL_FILE" <<ACL
user default off resetkeys resetchannels -@all
user hbscreen-bot on #$(sha "$REDIS_BOT_PASSWORD") resetkeys ~{hbscreen}:* ~hbscreen:bot:* $COMMON +info +bgrewriteaof
user hbscreen-worker on #$(sha "$REDIS_WORKER_PASSWORD") resetkeys ~{hbscreen}:* $COMMON
ACL
exec redis-server "$CONF" --aclfile "$ACL_FILE" "$@"  # extra arguments override the file
