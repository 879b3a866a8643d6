"""The Lua scripts behind the Redis backend; each runs atomically in Redis.

Keys (P = ``hh:{<fleet>}:``, one hash tag so a fleet's keys share a slot):

    P h:<origin>   zset  slot member -> expiry (ms, Redis clock): holders of the origin
    P h:*          zset  the same members -> expiry: holders of the total cap
    P q:<origin>   zset  host -> ticket: hosts waiting for the origin, FIFO
    P q:*          zset  "host|origin" -> ticket: the same waiters, for the total cap
    P qx           zset  "host|origin" -> expiry of the waiter entry (re-asking renews it)
    P qw           hash  "host|origin" -> slots the waiter still needs (its reservation)
    P seq, P ticket      counters
    P hosts        zset  host -> expiry: hosts alive (for the fallback share)
    P b:<key>      hash  breaker: f (consecutive failures), until (ms, 0 closed), s
    P bopen        zset  key -> until: breakers not closed
    P bp:<key>     string  the half-open probe lock (holder host), with expiry

All times come from Redis (`TIME`), so hosts' clocks never need to agree.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "BREAKER_POLL", "BREAKER_PROBE", "BREAKER_REPORT", "BREAKER_RESULT",
           "LEAVE", "RELEASE", "RENEW"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Forget waiter entries whose host stopped re-asking.
_PURGE_WAITERS = """
local function purge_waiters(p, now)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', p .. 'qx', '-inf', now)) do
    local sep = string.find(m, '|', 1, true)
    redis.call('ZREM', p .. 'q:' .. string.sub(m, sep + 1), string.sub(m, 1, sep - 1))
    redis.call('ZREM', p .. 'q:*', m)
    redis.call('HDEL', p .. 'qw', m)
    redis.call('ZREM', p .. 'qx', m)
  end
end
"""

# ARGV: prefix, host, origin, want, need, cap_origin, cap_total (-1 none), ttl_ms, wait_ttl_ms
# Returns {granted, member...}. Earlier waiters (FIFO by ticket) keep their
# reservation; a waiter on the total cap reserves no more than its origin
# still has room for, so a host blocked by its origin's cap does not hold
# back hosts waiting for other origins.
ACQUIRE = _PURGE_WAITERS + """
local p, host, origin = ARGV[1], ARGV[2], ARGV[3]
local want, need = tonumber(ARGV[4]), tonumber(ARGV[5])
local cap_o, cap_g = tonumber(ARGV[6]), tonumber(ARGV[7])
local ttl, wttl = tonumber(ARGV[8]), tonumber(ARGV[9])
""" + _NOW + """
local ho, hg, qo, qg = p .. 'h:' .. origin, p .. 'h:*', p .. 'q:' .. origin, p .. 'q:*'
local me = host .. '|' .. origin
redis.call('ZREMRANGEBYSCORE', ho, '-inf', now)
redis.call('ZREMRANGEBYSCORE', hg, '-inf', now)
purge_waiters(p, now)
local free_o, free_g = want, want
if cap_o >= 0 then
  free_o = cap_o - redis.call('ZCARD', ho)
  local mine = redis.call('ZSCORE', qo, host)
  local upto = '+inf'
  if mine then upto = '(' .. mine end
  for _, h in ipairs(redis.call('ZRANGEBYSCORE', qo, '-inf', upto)) do
    free_o = free_o - tonumber(redis.call('HGET', p .. 'qw', h .. '|' .. origin) or '0')
  end
end
if cap_g >= 0 then
  free_g = cap_g - redis.call('ZCARD', hg)
  local mine = redis.call('ZSCORE', qg, me)
  local upto = '+inf'
  if mine then upto = '(' .. mine end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', qg, '-inf', upto)) do
    local r = tonumber(redis.call('HGET', p .. 'qw', m) or '0')
    if cap_o >= 0 then
      local o = string.sub(m, string.find(m, '|', 1, true) + 1)
      local room = cap_o - redis.call('ZCARD', p .. 'h:' .. o)
      if room < r then r = math.max(room, 0) end
    end
    free_g = free_g - r
  end
end
local grant = math.max(0, math.min(want, free_o, free_g))
local out = {grant}
if grant > 0 then
  local seq = redis.call('INCRBY', p .. 'seq', grant)
  for i = 1, grant do
    local m = host .. '#' .. (seq - grant + i)
    redis.call('ZADD', ho, now + ttl, m)
    redis.call('ZADD', hg, now + ttl, m)
    out[#out + 1] = m
  end
end
if grant < need then
  if not redis.call('ZSCORE', qo, host) then
    local ticket = redis.call('INCR', p .. 'ticket')
    redis.call('ZADD', qo, ticket, host)
    redis.call('ZADD', qg, ticket, me)
  end
  redis.call('HSET', p .. 'qw', me, need - grant)
  redis.call('ZADD', p .. 'qx', now + wttl, me)
else
  redis.call('ZREM', qo, host)
  redis.call('ZREM', qg, me)
  redis.call('HDEL', p .. 'qw', me)
  redis.call('ZREM', p .. 'qx', me)
end
return out
"""

# ARGV: prefix, host, ttl_ms, host_ttl_ms, then origin, member pairs.
# Returns {hosts alive, total contended (0/1), #lost, lost..., contended origins...}.
RENEW = _PURGE_WAITERS + """
local p, host = ARGV[1], ARGV[2]
local ttl, host_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
""" + _NOW + """
local hg = p .. 'h:*'
redis.call('ZADD', p .. 'hosts', now + host_ttl, host)
redis.call('ZREMRANGEBYSCORE', p .. 'hosts', '-inf', now)
redis.call('ZREMRANGEBYSCORE', hg, '-inf', now)
purge_waiters(p, now)
local lost, seen, origins = {}, {}, {}
for i = 5, #ARGV, 2 do
  local o, m = ARGV[i], ARGV[i + 1]
  local ho = p .. 'h:' .. o
  if not seen[o] then
    seen[o] = true
    origins[#origins + 1] = o
    redis.call('ZREMRANGEBYSCORE', ho, '-inf', now)
  end
  if redis.call('ZSCORE', ho, m) and redis.call('ZSCORE', hg, m) then
    redis.call('ZADD', ho, now + ttl, m)
    redis.call('ZADD', hg, now + ttl, m)
  else
    redis.call('ZREM', ho, m)
    redis.call('ZREM', hg, m)
    lost[#lost + 1] = m
  end
end
local gcont = 0
for _, m in ipairs(redis.call('ZRANGE', p .. 'q:*', 0, -1)) do
  if string.sub(m, 1, #host + 1) ~= host .. '|' then gcont = 1 break end
end
local out = {redis.call('ZCARD', p .. 'hosts'), gcont, #lost}
for _, m in ipairs(lost) do out[#out + 1] = m end
for _, o in ipairs(origins) do
  for _, h in ipairs(redis.call('ZRANGE', p .. 'q:' .. o, 0, -1)) do
    if h ~= host then out[#out + 1] = o break end
  end
end
return out
"""

# ARGV: prefix, then origin, member pairs. Returns how many were still held.
RELEASE = """
local p = ARGV[1]
local n = 0
for i = 2, #ARGV, 2 do
  n = n + redis.call('ZREM', p .. 'h:' .. ARGV[i], ARGV[i + 1])
  redis.call('ZREM', p .. 'h:*', ARGV[i + 1])
end
return n
"""

# ARGV: prefix, host, then origins it may be waiting for. A clean stop.
LEAVE = """
local p, host = ARGV[1], ARGV[2]
redis.call('ZREM', p .. 'hosts', host)
for i = 3, #ARGV do
  local me = host .. '|' .. ARGV[i]
  redis.call('ZREM', p .. 'q:' .. ARGV[i], host)
  redis.call('ZREM', p .. 'q:*', me)
  redis.call('HDEL', p .. 'qw', me)
  redis.call('ZREM', p .. 'qx', me)
end
return 1
"""

# ARGV: prefix, key, failure_threshold, recovery_ms, keep_ms, force_open, codes (1 fail, 0 ok)...
# Returns {1, until} if the key is (now) open or half-open, {0, 0} if closed.
BREAKER_REPORT = """
local p, key = ARGV[1], ARGV[2]
local threshold, recovery, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
""" + _NOW + """
local hk = p .. 'b:' .. key
local until_ = tonumber(redis.call('HGET', hk, 'until') or '0')
if until_ > 0 then return {1, until_} end
local f = tonumber(redis.call('HGET', hk, 'f') or '0')
local opened = ARGV[6] == '1'
for i = 7, #ARGV do
  if opened then break end
  if ARGV[i] == '1' then
    f = f + 1
    if f >= threshold then opened = true end
  else
    f = 0
  end
end
if opened then
  until_ = now + recovery
  redis.call('HSET', hk, 'until', until_, 'f', 0, 's', 0)
  redis.call('PEXPIRE', hk, recovery + keep)
  redis.call('ZADD', p .. 'bopen', until_, key)
  return {1, until_}
end
if f == 0 then
  redis.call('DEL', hk)
else
  redis.call('HSET', hk, 'f', f)
  redis.call('PEXPIRE', hk, keep)
end
return {0, 0}
"""

# ARGV: prefix, key, host, probe_ttl_ms. Returns 1 closed (ordinary attempt),
# 2 the probe is ours, 0 refused (still open, or another host probes).
BREAKER_PROBE = """
local p, key, host = ARGV[1], ARGV[2], ARGV[3]
""" + _NOW + """
local until_ = tonumber(redis.call('HGET', p .. 'b:' .. key, 'until') or '0')
if until_ == 0 then return 1 end
if until_ > now then return 0 end
if redis.call('SET', p .. 'bp:' .. key, host, 'NX', 'PX', tonumber(ARGV[4])) then return 2 end
return 0
"""

# ARGV: prefix, key, host, verdict (s/f/n), success_threshold, recovery_ms, keep_ms.
BREAKER_RESULT = """
local p, key, host, verdict = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
""" + _NOW + """
local hk, lock = p .. 'b:' .. key, p .. 'bp:' .. key
if redis.call('GET', lock) ~= host then return 0 end
redis.call('DEL', lock)
local recovery, keep = tonumber(ARGV[6]), tonumber(ARGV[7])
if verdict == 'f' then
  local until_ = now + recovery
  redis.call('HSET', hk, 'until', until_, 's', 0)
  redis.call('PEXPIRE', hk, recovery + keep)
  redis.call('ZADD', p .. 'bopen', until_, key)
elseif verdict == 's' then
  if redis.call('HINCRBY', hk, 's', 1) >= tonumber(ARGV[5]) then
    redis.call('DEL', hk)
    redis.call('ZREM', p .. 'bopen', key)
  end
end
return 1
"""

# ARGV: prefix. Returns {now, key, until, probe busy (0/1), ...} for keys not closed.
BREAKER_POLL = """
local p = ARGV[1]
""" + _NOW + """
local out = {now}
local items = redis.call('ZRANGE', p .. 'bopen', 0, 255, 'WITHSCORES')
for i = 1, #items, 2 do
  local key = items[i]
  if redis.call('EXISTS', p .. 'b:' .. key) == 0 then
    redis.call('ZREM', p .. 'bopen', key)
  else
    out[#out + 1] = key
    out[#out + 1] = tonumber(items[i + 1])
    out[#out + 1] = redis.call('EXISTS', p .. 'bp:' .. key)
  end
end
return out
"""
