/**
 * The Lua scripts of the Redis quota ledger, and the runner that executes them with a deadline.
 * The reserve, dispatch, settle, release, read and sweep scripts each take one or more budget
 * lines. On a single node one script carries every line of a call (one command, and a reservation
 * that is atomic across lines); on a Redis Cluster each line goes alone, since a line's keys share
 * its `{budget|subject}` hash tag and so one slot, but different lines do not. Every script first
 * purges reservations whose expiry (a score in the line's expiry sorted set) is at or before the
 * `now` it is given, so the caller's clock decides expiry; purging is recovery (below).
 *
 * Keys of one line (R is the line's reservedKey):
 * - R          hash        requestId -> reserved amount; and '=' -> the tally, '<sum> <count>' of
 *                          the reservations in R (tallied below), so a reservation reads one field
 *                          instead of every open reservation of the line
 * - R:x        sorted set  requestId -> reservation expiry, epoch ms
 * - R:i        hash        requestId -> what recovery needs (the line's entry JSON and the request
 *                          id; on the call's event line also '~1', its profile's digest and the
 *                          lines' amounts, or, written before profiles, the event's parts whole);
 *                          and `#<requestId>` -> 1 once the call was dispatched to a provider
 * - R:p        hash        digest -> recovery profile: the event's parts that every call of one
 *                          caller, model, tier, policy and lines shares (recoveryInfo), written by
 *                          the reserve that sends it; lives PROFILE_TTL_MS from its last write
 * - R:s:<id>   string      on a cluster: settled marker of request <id> on this line (on a single
 *                          node one marker per call, `<prefix>{journal}:s:<id>`, passed as every
 *                          line's marker key; recovery names it `<journal base>:s:<id>` either way)
 * - usage keys string      settled usage counters (INCRBY)
 *
 * The journal (src/quota/journal.ts has the entry format and the chain): every script that closes a
 * call or changes a counter also appends its entry to a stream J in the same atomic step (one
 * entry per call: a reservation is journaled by the entry that closes it), with J's head JH
 * ("<seq> <link>") and the day's rollup hash ROLL beside it. A script's first three keys are always
 * J, JH, ROLL: `<prefix>{journal}:j`, `:jh`, `:roll:<day>` on a single node; on a cluster the
 * line's own `R:j`, `R:jh`, `R:roll:<day>` (same slot), or the `{journal}` ones for entries
 * without a line (refusals). The gateway sends each entry's body as JSON text with its
 * SHA-256 `h`; the script links it: `link = sha1hex(prev .. h)`, XADD seq/h/prev/link/body, and
 * moves the head. ROLL's field `#` (its version, for readers that keep a day's rollups between
 * reads) is the link of the entry that made the hash, or of the last entry that added to it after
 * its day was over by Redis's clock (`rollup` below). Entries that recovery writes are built here
 * from fragments the reservation kept, so their SHA-256 is computed in Lua (`sha256` below,
 * checked against node:crypto in the tests).
 *
 * Recovery: a purged reservation whose R:i says dispatched is charged at its reserved amount
 * (never more), its settled marker set so a late settle adds nothing, with a `recover` entry whose
 * event says `tollgate.settled_by: recovery`; any other is released with a `release` entry. Both
 * count in the rollups. Scripts that purge return `{result, events}`, the events being the JSON of
 * the decision events those entries committed, for the caller to hand to its listeners.
 */
import { createHash } from 'node:crypto';
import type { createClient } from '@keyv/redis';
import { GatewayError } from '../errors.js';
import { RECOVERY_REASONS } from './journal.js';
import { connectCluster, isCluster, masterClients, openNodeClients, type ClusterNodeClient, type RedisCluster } from './redisCluster.js';
import { NO_PROFILE_DIMS, PROFILE_FORMAT } from './redisJournal.js';

/** How long R:p, a line's recovery profiles, lives after a profile is written: 2 days. */
export const PROFILE_TTL_MS = 2 * 86_400_000;

export type RedisClient = ReturnType<typeof createClient>;

/** What the ledger talks to: one node, or a cluster that routes each command by its first key. */
export type RedisConnection = RedisClient | RedisCluster;

/** One node's connection: the single node itself, or a cluster master. */
export type RedisNode = RedisClient | ClusterNodeClient;

/** A Lua script with its SHA1, so it can be run by EVALSHA and fall back to EVAL after a restart. */
export interface LuaScript {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

function script(name: string, body: string): LuaScript {
  return bare(name, `${PRELUDE}\n${body}`);
}

/** A script without the shared helpers. */
function bare(name: string, source: string): LuaScript {
  return { name, source, sha: createHash('sha1').update(source).digest('hex') };
}

/** The SHA-256 round constants. */
const K256 = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/**
 * Helpers shared by every script. HDEL is batched to stay far below Lua's unpack limit.
 * `journal(KEYS, ARGV)` reads the arguments every journaled script starts with:
 * KEYS J, JH, ROLL; ARGV now, trim kind ('' | MAXLEN | MINID), trim value (entries to keep, or
 * for MINID the age in ms, counted on Redis's clock like the stream ids), rollup TTL ms.
 */
const PRELUDE = `
-- SHA-256 of a byte string, as lowercase hex (for entries recovery writes; the gateway hashes the
-- rest). Its tables are built only when it runs: every script pays for what its top level creates.
local function sha256(msg)
  local band, bor, bxor, bnot, rshift, lshift, ror, tobit, tohex = bit.band, bit.bor, bit.bxor, bit.bnot, bit.rshift, bit.lshift, bit.ror, bit.tobit, bit.tohex
  local K256 = {${K256.map((k) => `0x${k.toString(16).padStart(8, '0')}`).join(', ')}}
  local len = #msg
  local bits = len * 8
  msg = msg .. '\\128' .. string.rep('\\0', (55 - len) % 64)
    .. string.char(0, 0, 0, math.floor(bits / 4294967296) % 256)
    .. string.char(math.floor(bits / 16777216) % 256, math.floor(bits / 65536) % 256, math.floor(bits / 256) % 256, bits % 256)
  local H = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
  local w = {}
  for c = 1, #msg, 64 do
    for j = 0, 15 do
      local b1, b2, b3, b4 = string.byte(msg, c + j * 4, c + j * 4 + 3)
      w[j] = bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4)
    end
    for j = 16, 63 do
      local v15, v2 = w[j - 15], w[j - 2]
      local s0 = bxor(ror(v15, 7), ror(v15, 18), rshift(v15, 3))
      local s1 = bxor(ror(v2, 17), ror(v2, 19), rshift(v2, 10))
      w[j] = tobit(w[j - 16] + s0 + w[j - 7] + s1)
    end
    local a, b, cc, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
    for j = 0, 63 do
      local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = tobit(h + S1 + ch + K256[j + 1] + w[j])
      local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
      local maj = bxor(band(a, b), band(a, cc), band(b, cc))
      local t2 = tobit(S0 + maj)
      h, g, f, e, d, cc, b, a = g, f, e, tobit(d + t1), cc, b, a, tobit(t1 + t2)
    end
    H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + cc), tobit(H[4] + d)
    H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
  end
  local out = {}
  for i = 1, 8 do out[i] = tohex(H[i], 8) end
  return table.concat(out)
end

local GENESIS = string.rep('0', 40)

local function journal(keys, argv)
  return { j = keys[1], jh = keys[2], roll = keys[3], nowStr = argv[1], now = tonumber(argv[1]), trim = argv[2], trimv = argv[3], rollTtl = tonumber(argv[4]) }
end

local DAY_MS = 86400000

-- Redis's clock (TIME: seconds, microseconds), asked once a script.
local function redisTime(jr)
  if not jr.time then jr.time = redis.call('TIME') end
  return jr.time
end

-- Chains an entry whose body hashes to h after the stream's head, appends it and moves the head.
local function append(jr, h, body)
  local head = redis.call('GET', jr.jh)
  local seq, prev = 0, GENESIS
  if head then
    local sp = string.find(head, ' ', 1, true)
    seq = tonumber(string.sub(head, 1, sp - 1))
    prev = string.sub(head, sp + 1)
  end
  seq = seq + 1
  local link = redis.sha1hex(prev .. h)
  if jr.trim == 'MINID' then
    -- Stream ids are Redis's clock: the oldest id to keep is Redis's now minus the age.
    local t = redisTime(jr)
    local minid = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(jr.trimv)
    redis.call('XADD', jr.j, 'MINID', '~', string.format('%d', math.max(0, minid)), '*', 'seq', seq, 'h', h, 'prev', prev, 'link', link, 'body', body)
  elseif jr.trim ~= '' then
    redis.call('XADD', jr.j, jr.trim, '~', jr.trimv, '*', 'seq', seq, 'h', h, 'prev', prev, 'link', link, 'body', body)
  else
    redis.call('XADD', jr.j, '*', 'seq', seq, 'h', h, 'prev', prev, 'link', link, 'body', body)
  end
  redis.call('SET', jr.jh, seq .. ' ' .. link)
  jr.link = link
end

-- Adds rollup increments to the day's hash: args[from] is the dimensions, then metric, increment,
-- ... up to args[to]; each goes to the field '<metric>|<dimensions>'. Called right after append().
-- The field '#' (the hash's version, rollups.ts ROLLUP_VERSION_FIELD) takes the link of the entry
-- just appended only when the hash is made, or when the write goes into a day that is over by
-- Redis's own clock (a replica whose clock is behind, a settlement replayed after an outage):
-- readers read the last two days whole every time and keep older ones while their version is
-- unchanged (admin/redisRollups.ts), so a write into today's hash writes nothing but its
-- increments. The hash's day is the day of jr.now (the key is named from it). The first increment
-- is always 'calls' by 1: when it comes back as that increment the field held nothing and the hash
-- may be new, so HSETNX (a no-op when '#' is there); otherwise the hash existed before this call,
-- made with its version (or written before '#' existed), and the normal path costs one TIME where
-- it cost one HSET. A hash that gets '#' here for the first time gets its lifetime (one written
-- before '#' existed keeps the one it has).
local function rollup(jr, args, from, to)
  if to <= from then return end
  local dims = '|' .. args[from]
  local first = redis.call('HINCRBY', jr.roll, args[from + 1] .. dims, args[from + 2])
  for i = from + 3, to, 2 do redis.call('HINCRBY', jr.roll, args[i] .. dims, args[i + 1]) end
  local set = 0
  if math.floor(jr.now / DAY_MS) < math.floor(tonumber(redisTime(jr)[1]) / 86400) then
    set = redis.call('HSET', jr.roll, '#', jr.link)
  elseif first == tonumber(args[from + 2]) then
    set = redis.call('HSETNX', jr.roll, '#', jr.link)
  end
  if set == 1 and redis.call('PTTL', jr.roll) < 0 then redis.call('PEXPIRE', jr.roll, jr.rollTtl) end
end

-- Adds to a usage counter and extends (never shortens) its life to ttl ms from now. A counter whose
-- window has ended (ttl <= 0) takes nothing: the journal still records the charge, and the audit
-- counts a charge in a counter only when it came before the counter's expiry, the same rule.
local function charge(key, amount, ttl)
  if ttl > 0 then
    redis.call('INCRBY', key, amount)
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  end
end

-- An epoch-ms instant as Date.prototype.toISOString writes it.
local function iso(ms)
  ms = math.floor(ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, ms - secs * 1000)
end

-- The decision event of a reservation recovery closes, as canonical JSON (keys in sorted order);
-- recoveryEvent() in journal.ts (cause 'expired') is the same event. i: the R:i fields (see recover).
local function recoveryEvent(i, dispatched, now)
  local parts = {}
  local function kv(k, v) if v ~= '' then parts[#parts + 1] = '"' .. k .. '":' .. v end end
  kv('effect', dispatched and '"allow"' or '"error"')
  if not dispatched then kv('error.code', '"INTERNAL"') end
  kv('event', '"tollgate.decision"')
  kv('gen_ai.operation.name', '"chat"')
  kv('gen_ai.request.model', i[10])
  kv('gen_ai.usage.input_tokens', '0')
  kv('gen_ai.usage.output_tokens', '0')
  kv('outcome', dispatched and '"success"' or '"failed"')
  kv('policy.version', i[6])
  kv('reason', dispatched and ${JSON.stringify(JSON.stringify(RECOVERY_REASONS.expired.charged))} or ${JSON.stringify(JSON.stringify(RECOVERY_REASONS.expired.released))})
  kv('request.id', i[3])
  kv('time', '"' .. iso(now) .. '"')
  kv('tollgate.attempts', '[]')
  if dispatched then kv('tollgate.charged', i[12]) end
  kv('tollgate.cost_usd', '0')
  kv('tollgate.estimated_input_tokens', '0')
  kv('tollgate.latency_ms', '0')
  if dispatched and i[15] then kv('tollgate.limits_charged', i[15]) end
  if dispatched then kv('tollgate.model.served', i[10]) end
  kv('tollgate.settled_by', '"recovery"')
  if dispatched then kv('tollgate.tier.served', i[11]) end
  kv('transport', i[5])
  kv('user.cost_center', i[9])
  kv('user.id', i[7])
  kv('user.teams', i[8])
  return '{' .. table.concat(parts, ',') .. '}'
end

-- Once per request for an entry that carries a decision event but no charge (a release, a
-- refusal): SET NX of '<journal base>:e:<id>' for ttl ms. False when the entry was journaled
-- already: a write repeated because its reply was lost must not journal the decision twice.
local function firstTime(jr, id, ttl)
  if not ttl or ttl == '' then return true end
  return redis.call('SET', string.sub(jr.j, 1, -3) .. ':e:' .. id, '1', 'NX', 'PX', ttl) ~= false
end

-- Splits a string on newlines (empty parts kept).
local function lines(s)
  local out, from = {}, 1
  while true do
    local nl = string.find(s, '\\n', from, true)
    if not nl then
      out[#out + 1] = string.sub(s, from)
      return out
    end
    out[#out + 1] = string.sub(s, from, nl - 1)
    from = nl + 1
  end
end

-- Closes one expired reservation: charged at its amount if dispatched (recover), else released.
-- info (R:i): the line's JSON, the request id's JSON, and on the line that carries the event either
-- '~1', the digest of its profile in R:p (beside R) and the lines' amounts, comma-separated (what
-- recoveryInfo in redisJournal.ts writes), or, written before profiles, the parts themselves, one
-- a line. i below: usageKey, usage expiry, id JSON, line JSON, then the parts: transport, policy
-- version, user, teams, cost centre, model, tier, charged, rollup dimensions recovered, rollup
-- dimensions released, and, for a reservation with rate-limit lines, the limits charged (its slots
-- filled after the charged list's, as recoveryInfo orders the amounts). A profile gone from R:p (Redis lost it) leaves an event without the caller,
-- model, tier and charged list: transport and policy version 'unknown', the rollups under no name.
local function recover(jr, res, id, amount, info, dispatched, events)
  local p = lines(info)
  local line = cjson.decode(p[1])
  local i = {line.usageKey, line.expiresAt, p[2], p[1]}
  if p[3] == '${PROFILE_FORMAT}' then
    local profile = redis.call('HGET', res .. ':p', p[4])
    if profile then
      local amounts, n = {}, 0
      for a in string.gmatch(p[5], '[^,]+') do amounts[#amounts + 1] = a end
      local q = lines(profile)
      q[8] = (string.gsub(q[8], '\\1', function() n = n + 1 return amounts[n] end))
      if q[11] then q[11] = (string.gsub(q[11], '\\1', function() n = n + 1 return amounts[n] end)) end
      for x = 1, #q do i[#i + 1] = q[x] end
    else
      local none = {'"unknown"', '"unknown"', '', '', '', '', '', '', ${JSON.stringify(NO_PROFILE_DIMS)}, ${JSON.stringify(NO_PROFILE_DIMS)}}
      for x = 1, #none do i[#i + 1] = none[x] end
    end
  else
    for n = 3, #p do i[#i + 1] = p[n] end
  end
  local ev, body = ''
  if #i > 4 then ev = recoveryEvent(i, dispatched, jr.now) end
  local evPart = ev ~= '' and (',"event":' .. ev) or ''
  if dispatched then
    -- The amount its entry lists (a cap's line 0: its slot is given back, recoveryInfo), which is
    -- the reservation's on every other line.
    charge(i[1], tonumber(line.amount) or tonumber(amount), i[2] - jr.now)
    -- The marker is '<journal base>:s:<id>': the call's own on a single node, the line's on a
    -- cluster (R:j is the line's journal there). Kept a day: the longest the store lets a settle
    -- come after its reservation (settledMarkerMs).
    redis.call('SET', string.sub(jr.j, 1, -3) .. ':s:' .. id, '1', 'PX', DAY_MS)
    body = '{"at":' .. jr.nowStr .. evPart .. ',"id":' .. i[3] .. ',"kind":"recover","lines":[' .. i[4] .. '],"settledBy":"recovery"}'
  else
    body = '{"at":' .. jr.nowStr .. evPart .. ',"id":' .. i[3] .. ',"kind":"release","lines":[' .. i[4] .. ']}'
  end
  append(jr, sha256(body), body)
  if ev ~= '' then
    if dispatched then
      rollup(jr, {i[13], 'calls', 1, 'recovered', 1}, 1, 5)
    else
      rollup(jr, {i[14], 'calls', 1, 'failed:INTERNAL', 1}, 1, 5)
    end
    events[#events + 1] = ev
  end
end

-- R's tally: the field '=' holds '<sum> <count>' of the reservations in R, so that a reservation
-- reads one field, not every reservation open on its line (HVALS was O(calls in flight) on every
-- reservation: with a team's or a company's line shared by hundreds of calls at once, the most
-- expensive thing Redis did). It is trusted only while R holds exactly count reservations besides
-- it (HLEN); any other R (made before the tally existed, or changed by a script that does not keep
-- it) is summed whole (tallied) and the tally written again by the next reservation. The value is
-- not a number on purpose: a script from before the tally, which summed HVALS with tonumber,
-- fails on it (a script error: its call is refused INTERNAL) instead of reserving on a line whose
-- tally would then miss its reservation; so once a line has a tally, only scripts that keep it
-- add to it, and removals by older scripts show as a count that no longer matches.
-- A tally's sum and count.
local function parseTally(t)
  local sp = string.find(t, ' ', 1, true)
  return tonumber(string.sub(t, 1, sp - 1)), tonumber(string.sub(t, sp + 1))
end

-- t: the tally as read (HGET '='), or nil.
local function tallied(res, t)
  if t then
    local sum, count = parseTally(t)
    if count == redis.call('HLEN', res) - 1 then return sum, count end
  end
  local sum, count = 0, 0
  local all = redis.call('HGETALL', res)
  for i = 1, #all, 2 do
    if all[i] ~= '=' then
      sum = sum + tonumber(all[i + 1])
      count = count + 1
    end
  end
  return sum, count
end

local function tally(sum, count)
  return string.format('%d %d', sum, count)
end

-- Takes amount and n reservations, just removed from R, off its tally t (as read before, or nil
-- to read it now). A tally that was already wrong stays wrong by the same count, and is summed
-- whole at the next reservation. R without a tally gets none here.
-- Returns true when the tally says other reservations are still held on the line (so the line's
-- keys are not empty); false when it says none are, or when there is no tally to say.
local function untally(res, amount, n, t)
  if t == nil then t = redis.call('HGET', res, '=') end
  if not t then return false end
  local sum, count = parseTally(t)
  if count > n then
    redis.call('HSET', res, '=', tally(sum - amount, count - n))
    return true
  end
  redis.call('HDEL', res, '=')
  return false
end

-- Removes expired reservations of a line, closing each through recovery (journaled).
local function purge(jr, res, exp, inf, events)
  local dead = redis.call('ZRANGEBYSCORE', exp, '-inf', jr.now)
  if #dead == 0 then return end
  local gone, n = 0, 0
  for _, id in ipairs(dead) do
    local amount = redis.call('HGET', res, id)
    local info = redis.call('HGET', inf, id)
    if amount then
      gone = gone + tonumber(amount)
      n = n + 1
    end
    if amount and info then recover(jr, res, id, amount, info, redis.call('HEXISTS', inf, '#' .. id) == 1, events) end
  end
  for i = 1, #dead, 250 do
    local batch, marks = {}, {}
    for j = i, math.min(i + 249, #dead) do
      batch[#batch + 1] = dead[j]
      marks[#marks + 1] = dead[j]
      marks[#marks + 1] = '#' .. dead[j]
    end
    redis.call('HDEL', res, unpack(batch))
    redis.call('HDEL', inf, unpack(marks))
  end
  redis.call('ZREMRANGEBYSCORE', exp, '-inf', jr.now)
  if n > 0 then untally(res, gone, n) end
end

-- What KEYS[from] to KEYS[to] hold, as numbers (0 for a missing key), read in one MGET: a
-- per-minute limit reads 12 buckets, one command instead of 12. A counter that holds no number,
-- or a key of another type (MGET answers it as missing; one EXISTS tells them apart), is another
-- application's key or a hand edit: the script fails, with the error the store names the key by,
-- rather than read it as 0 and admit calls on a budget already spent.
local function values(from, to)
  local out = {}
  if to < from then return out end
  local got = redis.call('MGET', unpack(KEYS, from, to))
  local missing = 0
  for i = 1, #got do
    if got[i] then
      out[i] = tonumber(got[i])
      if not out[i] then error({err = 'ERR value is not an integer or out of range'}) end
    else
      out[i] = 0
      missing = missing + 1
    end
  end
  if missing > 0 and redis.call('EXISTS', unpack(KEYS, from, to)) > #got - missing then
    for i = 1, #got do
      if not got[i] then redis.call('GET', KEYS[from + i - 1]) end
    end
  end
  return out
end


-- A line's reservation keys go as soon as they hold nothing.
local function emptied(res, exp, inf)
  if redis.call('ZCARD', exp) == 0 then redis.call('DEL', res, exp, inf) end
end

-- After a reservation expiring at \`expiry\`: the keys live at least an hour past it, for the sweep to
-- close it if no call touches the line again (and are deleted once empty). They are given two
-- hours at a time and only extended (never shortened) when less than one is left past it, so most
-- reservations cost one PTTL here; the three keys are always extended together.
local function extend(res, exp, inf, now, expiry)
  local need = math.max(1, math.floor(expiry - now)) + 3600000
  if redis.call('PTTL', inf) >= need then return end
  local ttl = need + 3600000
  redis.call('PEXPIRE', res, ttl)
  redis.call('PEXPIRE', exp, ttl)
  redis.call('PEXPIRE', inf, ttl)
end

-- Drops a request's reservation on a line, then deletes the line's keys if they hold nothing
-- (emptied). A line whose tally says other reservations are still held is not looked at: with a
-- tally that is wrong (below), keys left empty expire with their lifetime or go at the sweep.
-- Returns 1 if the line held the reservation.
local function drop(res, exp, inf, id)
  local got = redis.call('HMGET', res, id, '=')
  if not got[1] then return 0 end
  redis.call('HDEL', res, id)
  local others = untally(res, tonumber(got[1]), 1, got[2])
  redis.call('ZREM', exp, id)
  redis.call('HDEL', inf, id, '#' .. id)
  if not others then emptied(res, exp, inf) end
  return 1
end
`;

/**
 * The line JSON `text` (lineText) moved `by` ms later: its usage key `from` becomes `to`, its expiresAt
 * as much later. The keys are found and written as JSON writes them (a backslash or quote of the key
 * prefix escaped; lineKeys URI-encodes subjects, and ids take neither). Nil when the text does not name `from`.
 */
const LATER_LINE = `
local function jsonEsc(k) return (string.gsub(k, '[\\\\"]', '\\\\%0')) end
local function laterLine(text, from, to, by)
  local s, e = string.find(text, '"usageKey":"' .. jsonEsc(from) .. '"', 1, true)
  if not s then return nil end
  text = string.sub(text, 1, s - 1) .. '"usageKey":"' .. jsonEsc(to) .. '"' .. string.sub(text, e + 1)
  local _, x = string.find(text, ',"expiresAt":', 1, true)
  if not x then return nil end
  local num = string.match(text, '^%-?%d+', x + 1)
  if not num then return nil end
  return string.sub(text, 1, x) .. string.format('%.0f', tonumber(num) + by) .. string.sub(text, x + 1 + #num)
end
`;

/**
 * Reserves on several lines at once, all or none. No journal entry: a reservation is journaled by
 * the entry that closes it (the call's settle or release, or recovery's recover or release, which
 * carries the line at its reserved amount), so a call costs one entry, not two.
 * KEYS: J, JH, ROLL, IDX, P (R:p of the first line: the recovery profiles), then per line: R, R:x,
 * R:i, R:s:<id>, readKeys..., late keys...
 * ARGV: journal args (4), requestId, reservation expiry, index it (1/0), request id JSON,
 * dispatching (1: the dispatch mark goes with the reservation, as DISPATCH would write it), the
 * profile's digest (empty when this script does not carry the call's event), the profile's text
 * (empty when the gateway wrote it already), then per line: key count, amount, limit, the line's
 * JSON, the lines' amounts (first line only; see recoveryInfo), the start and end of the
 * line's bucket (empty for a line without one: see LedgerLine.bucket) and how many late keys it
 * has (LedgerLine.lateKeys). A line whose bucket Redis's time has passed, by no more buckets than it
 * has late keys, reads the window ending with Redis's bucket and is charged there: its JSON in R:i
 * (what recovery charges) names that bucket's key, and its reply says how many buckets late it is
 * (below). With "index it", each reserved
 * line's R is added to IDX (the lines with open reservations, scored by their latest expiry) for
 * the sweep. A profile sent is written to P (kept ${PROFILE_TTL_MS / 86_400_000} days from its last write) when the
 * reservation is made; one not sent must be there, else nothing is reserved and every line says 4.
 * Returns {per line {state, used, reserved[, values of the read keys when refused]}, events}: state
 * 1 reserved now, 2 already reserved or settled, 0 refused, 3 would fit but nothing was reserved
 * because another line said 0 or 2, 4 nothing reserved: the profile is not in P (send it), 5
 * nothing reserved: a line's bucket does not hold Redis's time now, which every line then gives as
 * its `used` (epoch ms). That check comes first, so a line is only ever charged in the bucket that
 * is current by the one clock every replica's reservations on it meet: Redis's. A line charged in a
 * later bucket than its own adds the read keys' values (or nothing) and the number of buckets.
 */
export const RESERVE = script(
  'reserve',
  `${LATER_LINE}
local jr = journal(KEYS, ARGV)
local id, expiry, index, idJson, dispatching = ARGV[5], ARGV[6], ARGV[7] == '1', ARGV[8], ARGV[9] == '1'
local digest, profile = ARGV[10], ARGV[11]
local out, taken, events, k, blocked = {}, {}, {}, 6, false
local seen, settled
-- How many buckets past its own each line is charged in (0 for a line without a bucket), and its
-- JSON then (naming that bucket).
local late, texts, kk = {}, {}, 6
for a = 12, #ARGV, 8 do
  late[a], texts[a] = 0, ARGV[a + 3]
  if ARGV[a + 5] ~= '' then
    local t = redisTime(jr)
    local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local start, stop, spare = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
    if ms >= stop then late[a] = math.floor((ms - start) / (stop - start)) end
    if ms >= start and late[a] > 0 and late[a] <= spare then
      local own = kk + tonumber(ARGV[a]) - 1 - spare
      texts[a] = laterLine(ARGV[a + 3], KEYS[own], KEYS[own + late[a]], late[a] * (stop - start))
    end
    if ms < start or late[a] > spare or not texts[a] then
      for b = 12, #ARGV, 8 do out[#out + 1] = {5, ms, 0} end
      return {out, events}
    end
  end
  kk = kk + tonumber(ARGV[a])
end
if digest ~= '' and profile == '' and redis.call('HEXISTS', KEYS[5], digest) == 0 then
  for a = 12, #ARGV, 8 do out[#out + 1] = {4, 0, 0} end
  return {out, events}
end
for a = 12, #ARGV, 8 do
  local n, amount, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local res, exp, inf, marker = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  -- The window read ends with the bucket Redis's time is in: the line's own, or one of its late
  -- keys (the last ARGV[a + 7] of its keys).
  local spare, shift, text = tonumber(ARGV[a + 7]) or 0, late[a], texts[a]
  purge(jr, res, exp, inf, events)
  local state, used, reserved, count = 3, 0, 0, 0
  local vals
  -- On a single node every line names the call's one marker: EXISTS once, not once a line.
  if marker ~= seen then
    seen = marker
    settled = redis.call('EXISTS', marker) == 1
  end
  local got = not settled and redis.call('HMGET', res, id, '=')
  if not got or got[1] then
    state = 2
  else
    vals = values(k + 4 + shift, k + n - 1 - spare + shift)
    for _, v in ipairs(vals) do used = used + v end
    reserved, count = tallied(res, got[2])
    if used + reserved + amount > limit then state = 0 end
  end
  if state ~= 3 then blocked = true end
  out[#out + 1] = {state, used, reserved}
  -- A refusal also says what each read key holds (a rate limit's retry time comes from them).
  if state == 0 then out[#out][4] = vals end
  if shift > 0 then
    out[#out][4] = out[#out][4] or {}
    out[#out][5] = shift
  end
  local info = text .. '\\n' .. idJson
  if ARGV[a + 4] ~= '' then info = info .. '\\n${PROFILE_FORMAT}\\n' .. digest .. '\\n' .. ARGV[a + 4] end
  taken[#taken + 1] = {res, exp, inf, ARGV[a + 1], info, reserved + amount, count + 1}
  k = k + n
end
if not blocked and profile ~= '' then
  redis.call('HSET', KEYS[5], digest, profile)
  redis.call('PEXPIRE', KEYS[5], ${PROFILE_TTL_MS})
end
local indexed = {}
for i, l in ipairs(taken) do
  if not blocked then
    redis.call('HSET', l[1], id, l[4], '=', tally(l[6], l[7]))
    redis.call('ZADD', l[2], expiry, id)
    if dispatching then
      redis.call('HSET', l[3], id, l[5], '#' .. id, '1')
    else
      redis.call('HSET', l[3], id, l[5])
    end
    extend(l[1], l[2], l[3], jr.now, tonumber(expiry))
    indexed[#indexed + 1] = expiry
    indexed[#indexed + 1] = l[1]
    out[i][1] = 1
  else
    emptied(l[1], l[2], l[3])
  end
end
if not blocked and index then redis.call('ZADD', KEYS[4], 'GT', unpack(indexed)) end
return {out, events}
`,
);

/**
 * Marks a request's reservation dispatched on several lines: the mark recovery reads. No entry
 * (what recovery does with the reservation, `recover` or `release`, is the journal's record of
 * it), and no purge: this is on the call path just before the provider. KEYS per line: R, R:i.
 * ARGV: requestId. Returns how many lines were marked.
 */
export const DISPATCH: LuaScript = bare(
  'dispatch',
  `
local id, marked = ARGV[1], 0
for k = 1, #KEYS, 2 do
  if redis.call('HEXISTS', KEYS[k], id) == 1 then
    redis.call('HSET', KEYS[k + 1], '#' .. id, '1')
    marked = marked + 1
  end
end
return marked
`,
);

/**
 * Renews a request's reservation on several lines: its expiry in R:x moves to ARGV[2] (never
 * back), and the line's keys live at least an hour past it, as after a reservation. No purge and
 * no entry: a renewal changes no amount. A line that no longer holds the request is left alone,
 * unless its ARGV amount is given (a cap's line: its reservation is the count, and the call is
 * still running) and the call has not settled itself (its marker is not 'c'): then it closed by
 * expiry while its replica could not reach Redis (recovery gave the slot back, charging 0), and
 * the reservation is made again at that amount, with no check, so that new calls see the slot
 * taken. It has no R:i: nothing to recover, and the call's settle drops it (SETTLE).
 * KEYS: per line R, R:x, R:i, R:s:<id> (the settled marker), then, when ARGV[4] is '1', the sweep's
 * index (on a cluster the index lives in another slot and the gateway renews it in a call of its
 * own). ARGV: requestId, expiry, now, index it (1/0), then per line the amount to make again (empty:
 * never); each renewed line's R is then scored in the index by the new expiry. Returns {lines
 * renewed, of them made again}.
 */
export const EXTEND = script(
  'extend',
  `
local id, expiry, now, index = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local last, renewed, again = #KEYS, 0, 0
if index then last = last - 1 end
for k = 1, last, 4 do
  local held = redis.call('HEXISTS', KEYS[k], id) == 1
  local amount = ARGV[4 + (k + 3) / 4]
  if not held and amount ~= '' and redis.call('GET', KEYS[k + 3]) ~= 'c' then
    local sum, count = tallied(KEYS[k], redis.call('HGET', KEYS[k], '='))
    redis.call('HSET', KEYS[k], id, amount, '=', tally(sum + tonumber(amount), count + 1))
    held = true
    again = again + 1
  end
  if held then
    redis.call('ZADD', KEYS[k + 1], 'GT', expiry, id)
    extend(KEYS[k], KEYS[k + 1], KEYS[k + 2], now, tonumber(expiry))
    if index then redis.call('ZADD', KEYS[#KEYS], 'GT', expiry, KEYS[k]) end
    renewed = renewed + 1
  end
end
return {renewed, again}
`,
);

/**
 * Charges several lines. KEYS: J, JH, ROLL, then per line: R, R:x, R:i, R:s:<id>, usageKey.
 * ARGV: journal args (4), requestId, h, body, rollup list length m, the rollup list (the
 * dimensions, then metric and increment pairs; empty without an event), then per line: amount,
 * usage ttl ms, marker ttl ms.
 * All lines not yet settled are charged, the settle entry appended and the rollups added in one
 * step. When some lines were settled already and others not, nothing is written and the reply
 * says which are free, so the gateway sends the entry again for those (its body names its lines).
 * Returns {per line 1 charged / 0 already settled (by recovery) / 3 already settled by this call's
 * own settle (its marker says 'c': a settle repeated because its reply was lost) / 2 free but not
 * charged, events}.
 */
export const SETTLE = script(
  'settle',
  `
local jr = journal(KEYS, ARGV)
local id, h, body, m = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local first = 9 + m
local out, events, free, done = {}, {}, 0, 0
-- On a single node every line names the call's one marker: it is read once (and written once below).
local marker, by
for a = first, #ARGV, 3 do
  local k = (a - first) / 3 * 5 + 4
  purge(jr, KEYS[k], KEYS[k + 1], KEYS[k + 2], events)
  if KEYS[k + 3] ~= marker then
    marker = KEYS[k + 3]
    by = redis.call('GET', marker)
  end
  if by then
    -- 'c': this call's own settle wrote the marker (so its entry, with the event, is journaled):
    -- a replay whose first reply was lost. Anything else: recovery settled it. A reservation
    -- without R:i is one a renewal made again after that recovery (EXTEND: a cap's slot, charged
    -- nothing): the call has ended, so its slot is given back; one with R:i is recovery's to close.
    out[#out + 1] = by == 'c' and 3 or 0
    done = done + 1
    if redis.call('HEXISTS', KEYS[k + 2], id) == 0 then drop(KEYS[k], KEYS[k + 1], KEYS[k + 2], id) end
  else
    out[#out + 1] = 2
    free = free + 1
  end
end
if free > 0 and done == 0 then
  marker = nil
  for a = first, #ARGV, 3 do
    local k = (a - first) / 3 * 5 + 4
    drop(KEYS[k], KEYS[k + 1], KEYS[k + 2], id)
    charge(KEYS[k + 4], tonumber(ARGV[a]), tonumber(ARGV[a + 1]))
    if KEYS[k + 3] ~= marker then
      marker = KEYS[k + 3]
      redis.call('SET', marker, 'c', 'PX', ARGV[a + 2])
    end
    out[(a - first) / 3 + 1] = 1
  end
  append(jr, h, body)
  rollup(jr, ARGV, 9, 8 + m)
end
return {out, events}
`,
);

/**
 * Drops a request's reservation on several lines. KEYS: J, JH, ROLL, then per line: R, R:x, R:i.
 * ARGV: journal args (4), requestId, h, body, journal it (1: the entry carries the call's event and
 * is appended whether or not anything was held; 0: nothing is appended, since the reservation was
 * never journaled on its own), rollup list length m, the rollup list (as SETTLE's), then (optional)
 * the ttl ms of the request's once-only mark (firstTime): an entry already journaled for the
 * request is not appended again. Returns {{dropped, 1 appended / 0 journaled before}, events}.
 */
export const RELEASE = script(
  'release',
  `
local jr = journal(KEYS, ARGV)
local id, h, body, journaled, m = ARGV[5], ARGV[6], ARGV[7], ARGV[8] == '1', tonumber(ARGV[9])
local dropped, events, appended = 0, {}, 0
for k = 4, #KEYS, 3 do
  purge(jr, KEYS[k], KEYS[k + 1], KEYS[k + 2], events)
  dropped = dropped + drop(KEYS[k], KEYS[k + 1], KEYS[k + 2], id)
end
if journaled and firstTime(jr, id, ARGV[10 + m]) then
  append(jr, h, body)
  rollup(jr, ARGV, 10, 9 + m)
  appended = 1
end
return {{dropped, appended}, events}
`,
);

/**
 * Reads several lines. KEYS: J, JH, ROLL, then per line: R, R:x, R:i, readKeys...
 * ARGV: journal args (4), recover (1: close expired reservations first, as every other script
 * does; 0: leave them, counted as held, for a store that recovers), then per line its key count.
 * Returns {per line {used, reserved}, events}.
 */
export const READ = script(
  'read',
  `
local jr = journal(KEYS, ARGV)
local recovers = ARGV[5] == '1'
local out, events, k = {}, {}, 4
for a = 6, #ARGV do
  local n = tonumber(ARGV[a])
  if recovers then purge(jr, KEYS[k], KEYS[k + 1], KEYS[k + 2], events) end
  local used = 0
  for _, v in ipairs(values(k + 3, k + n - 1)) do used = used + v end
  out[#out + 1] = {used, (tallied(KEYS[k], redis.call('HGET', KEYS[k], '=')))}
  k = k + n
end
return {out, events}
`,
);

/**
 * Closes the expired reservations of one line (the periodic sweep). KEYS: J, JH, ROLL, R, R:x,
 * R:i.  ARGV: journal args (4). Returns {reservations still open, events}.
 */
export const SWEEP = script(
  'sweep',
  `
local jr = journal(KEYS, ARGV)
local events = {}
purge(jr, KEYS[4], KEYS[5], KEYS[6], events)
emptied(KEYS[4], KEYS[5], KEYS[6])
return {redis.call('ZCARD', KEYS[5]), events}
`,
);

/**
 * Appends one entry that changes no counter (a refusal) with its rollups. KEYS: J, JH, ROLL.
 * ARGV: journal args (4), h, body, rollup list length m, the rollup list (as SETTLE's), then
 * (optional) the request id and the ttl ms of its once-only mark (firstTime). Returns 1 when
 * appended, 0 when the request's entry was journaled before.
 */
export const CHAIN = script(
  'chain',
  `
local jr = journal(KEYS, ARGV)
local m = tonumber(ARGV[7])
local id = ARGV[8 + m]
if id and id ~= '' and not firstTime(jr, id, ARGV[9 + m]) then return 0 end
append(jr, ARGV[5], ARGV[6])
rollup(jr, ARGV, 8, 7 + m)
return 1
`,
);

/**
 * An admin correction: adds a signed delta to a usage counter and appends the `admin` entry.
 * KEYS: J, JH, ROLL, usageKey.  ARGV: journal args (4), delta, ttl ms, h, body.
 * Returns the counter after the change.
 */
export const ADJUST = script(
  'adjust',
  `
local jr = journal(KEYS, ARGV)
charge(KEYS[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
append(jr, ARGV[7], ARGV[8])
return tonumber(redis.call('GET', KEYS[4]) or '0')
`,
);

/**
 * An alert entry (src/alerts), optionally taking its once-only mark first: with a mark key, SET NX
 * PX decides which replica fires, and only that one appends the entry, in the same atomic step.
 * KEYS: J, JH, ROLL[, mark].  ARGV: journal args (4), h, body[, mark ttl ms].
 * Returns 1 when the entry was appended, 0 when the mark was already taken.
 */
export const ALERT = script(
  'alert',
  `
local jr = journal(KEYS, ARGV)
if KEYS[4] then
  local ttl = math.max(1, tonumber(ARGV[7]))
  if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ttl) then return 0 end
end
append(jr, ARGV[5], ARGV[6])
return 1
`,
);

/** An alert counter: KEYS counter; ARGV increment, ttl ms (set when the counter is created). Returns the new value. */
export const ALERT_COUNT = bare(
  'alert_count',
  `
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(ARGV[2]))) end
return v
`,
);

/** The lines the sweep should look at: KEYS IDX; ARGV now, most. Returns reservedKeys whose latest expiry has passed. */
export const DUE = bare(
  'due',
  `
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
`,
);

/**
 * Indexes lines for the sweep (on a cluster, where IDX is in another slot than the lines):
 * KEYS IDX; ARGV expiry, reservedKeys... Or, with ARGV[1] = 'drop', removes ARGV[3] unless a
 * reservation newer than ARGV[2] (now) was indexed since.
 */
export const INDEX = bare(
  'index',
  `
if ARGV[1] == 'drop' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[3])
  if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[3]) end
  return 0
end
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'GT', ARGV[1], ARGV[i]) end
return 1
`,
);

/** The Lua SHA-256 alone, for its test against node:crypto. ARGV: the message. */
export const SHA256 = script('sha256', `return sha256(ARGV[1])`);

/** Every script, loaded on each (re)connection so EVALSHA finds them even when an answer comes late. */
export const ALL_SCRIPTS: readonly LuaScript[] = [RESERVE, DISPATCH, EXTEND, SETTLE, RELEASE, READ, SWEEP, CHAIN, ADJUST, DUE, INDEX, ALERT, ALERT_COUNT];

/** A key of the ledger holds what the ledger never writes there: not an outage, the operator's to fix. */
export class LedgerKeyError extends Error {
  constructor(
    /** The key at fault. */
    readonly key: string,
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
    this.name = 'LedgerKeyError';
  }
}

/**
 * The type the ledger keeps at `key`, told by its name (docs/quota.md, "Keys"); undefined for a
 * name it does not know. Markers first: their request id may end like any other key.
 */
export function ledgerKeyType(key: string): 'string' | 'hash' | 'zset' | 'stream' | undefined {
  if (/(\}|:r):[se]:/.test(key) || /:u:-?\d+$/.test(key) || /:jh$/.test(key)) return 'string';
  if (/:r(:[ip])?$/.test(key) || /:roll:\d{4}-\d{2}-\d{2}$/.test(key)) return 'hash';
  if (/:r:x$/.test(key) || /\}:open$/.test(key)) return 'zset';
  if (/:j$/.test(key)) return 'stream';
  return undefined;
}

/** How a usage counter's value is not a whole number, for the error naming it; undefined when it is one. */
function notWhole(value: string | null): string | undefined {
  if (value === null || /^-?\d+$/.test(value)) return undefined;
  return `holds ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
}

/** Redis error replies that mean "not available now" rather than a bug in a script. */
const UNAVAILABLE_REPLIES = new Set(['LOADING', 'BUSY', 'READONLY', 'MASTERDOWN', 'CLUSTERDOWN', 'TRYAGAIN', 'NOREPLICAS', 'OOM', 'MISCONF']);

/** The code of a Redis error reply (`NOSCRIPT No matching script`), or undefined for client-side errors. */
function replyCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  return /^([A-Z][A-Z_]+) /.exec(err.message)?.[1];
}

/**
 * True when an error means the store cannot be reached now: the client is offline or closed, a
 * command timed out, or Redis answered with a transient error. Other error replies are bugs.
 */
export function isOutage(err: unknown): boolean {
  if (err instanceof GatewayError) return err.code === 'QUOTA_STORE_UNAVAILABLE';
  if (err instanceof LedgerKeyError) return false;
  const code = replyCode(err);
  return code === undefined || UNAVAILABLE_REPLIES.has(code);
}

/** An outage as the GatewayError callers see; anything else is returned unchanged. */
export function asStoreError(err: unknown): unknown {
  if (err instanceof GatewayError || !isOutage(err)) return err;
  return new GatewayError('QUOTA_STORE_UNAVAILABLE', 'The quota store is unreachable.', {}, { cause: err });
}

/** A command waiting for its answer: when it is due (performance.now()), and how to fail it. */
interface Waiter {
  due: number;
  reject: (err: unknown) => void;
}

/**
 * Runs scripts on a node-redis client or cluster client: EVALSHA with an EVAL fallback, every
 * command bounded by a deadline, and no waiting while disconnected except for the very first
 * connection. On a cluster each script goes to the master of its line's slot (the first key).
 */
export class ScriptRunner {
  private connecting: Promise<void> | undefined;
  private waitUntil = 0;
  private stopped = false;

  constructor(
    private readonly client: RedisConnection,
    private readonly timeoutMs: number,
    /** Pause before the next attempt at a cluster's first discovery (a single node retries by itself). */
    private readonly retryDelay: (attempt: number) => number,
  ) {}

  /** Starts connecting and keeps retrying; the first commands wait for it up to the timeout. */
  start(onFailure: (err: unknown) => void): void {
    this.waitUntil = Date.now() + this.timeoutMs;
    const client = this.client;
    const connected = isCluster(client)
      ? connectCluster(client, this.retryDelay, () => this.stopped, onFailure)
      : client.connect().then(
          () => undefined,
          (err: unknown) => {
            if (!this.stopped) onFailure(err);
          },
        );
    this.connecting = connected.finally(() => {
      this.connecting = undefined;
    });
  }

  /**
   * Loads every script on `node`, or on every node (each cluster master), so EVALSHA finds them
   * even when a late NOSCRIPT could no longer fall back.
   */
  async preload(node?: RedisNode): Promise<void> {
    const targets = node ? [node] : await this.nodes();
    await Promise.all(targets.flatMap((n) => ALL_SCRIPTS.map((s) => this.timed(n.scriptLoad(s.source)))));
  }

  /** The connection of every node that holds data: the single node, or every cluster master. */
  async nodes(): Promise<RedisNode[]> {
    await this.ready();
    return isCluster(this.client) ? this.timed(masterClients(this.client)) : [this.client];
  }

  async run(script: LuaScript, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    // No await (and no turn of the microtask queue) when connected, as on every call.
    if (!this.isReady()) await this.ready();
    const options = { keys, arguments: args.map((a) => (typeof a === 'number' ? String(a) : a)) };
    // A master that never saw the script (new after a failover, or restarted) answers NOSCRIPT;
    // EVAL, routed by the same first key, runs it there and caches it for the next EVALSHA.
    try {
      try {
        return await this.timed(this.client.evalSha(script.sha, options));
      } catch (err) {
        if (replyCode(err) !== 'NOSCRIPT') throw err;
        return await this.timed(this.client.eval(script.source, options));
      }
    } catch (err) {
      throw isOutage(err) ? err : await this.clash(script, keys, err);
    }
  }

  /**
   * A script's error as the operator can act on it: when a key it was given holds what the ledger
   * never writes there (another application's key under the ledger's prefix, or a value edited by
   * hand), Redis's reply names the script's line, not the key; this names the key. Looked up only
   * on that error, key by key; anything else, or a lookup that fails, leaves the error as it was.
   */
  private async clash(script: LuaScript, keys: string[], err: unknown): Promise<unknown> {
    const code = replyCode(err);
    if (code !== 'WRONGTYPE' && !(code === 'ERR' && /not an integer/.test((err as Error).message))) return err;
    try {
      for (const key of new Set(keys)) {
        const expected = ledgerKeyType(key);
        if (expected === undefined) continue;
        const type = String(await this.timed(this.client.type(key)));
        const found =
          type !== 'none' && type !== expected
            ? `is a ${type}`
            : type === 'string' && /:u:-?\d+$/.test(key)
              ? notWhole(await this.get(key))
              : undefined;
        if (found === undefined) continue;
        return new LedgerKeyError(
          key,
          `Redis key "${key}" ${found} where the quota ledger keeps a ${expected === 'string' && /:u:-?\d+$/.test(key) ? 'string holding a whole number' : expected} ` +
            `(script ${script.name}): another application's key, or a hand edit, under the ledger's key prefix (TOLLGATE_KEY_PREFIX). ` +
            'Move or delete that key, or give tollgate a prefix of its own.',
          { cause: err },
        );
      }
    } catch {
      // The lookup failed too (the store went away meanwhile): Redis's own error says what it can.
    }
    return err;
  }

  /** The value of a plain string key, from whichever node holds it. */
  get(key: string): Promise<string | null> {
    return this.timed(this.client.get(key));
  }

  /** True while commands can be sent: the node is connected, or the cluster's slot map is known. */
  isReady(): boolean {
    // A cluster is open from the start of its first discovery, before it knows any slot.
    return isCluster(this.client) ? this.client.isOpen && this.client.masters.length > 0 : this.client.isReady;
  }

  /**
   * Bounds a command by the timeout. node-redis's own `timeout` only covers a command until it is
   * written, so a server that accepts the bytes and never answers needs this. One watchdog timer
   * serves every command waiting (not a timer each: five or six commands a call each paid for a
   * timer, its promise and a race): it runs every `tick` ms while any command waits and fails those
   * past their deadline, so a command that gets no answer fails between the timeout and the timeout
   * plus a tick.
   */
  timed<T>(command: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = { due: performance.now() + this.timeoutMs, reject };
      this.waiting.add(waiter);
      this.watchdog ??= setInterval(() => this.expire(), this.tick);
      command.then(
        (value) => {
          this.waiting.delete(waiter);
          resolve(value);
        },
        (err: unknown) => {
          this.waiting.delete(waiter);
          reject(err);
        },
      );
    });
  }

  /** Commands waiting for an answer, in the order they were sent (so by deadline). */
  private readonly waiting = new Set<Waiter>();
  private watchdog: NodeJS.Timeout | undefined;

  /** How often the watchdog looks: an eighth of the timeout, from 5 ms to 250 ms. */
  private get tick(): number {
    return Math.min(250, Math.max(5, Math.floor(this.timeoutMs / 8)));
  }

  /** Fails the commands past their deadline; stops the watchdog once nothing waits. */
  private expire(): void {
    // The monotonic clock, as timers use: a step of the wall clock fails nothing early.
    const now = performance.now();
    for (const waiter of this.waiting) {
      if (waiter.due > now) break;
      this.waiting.delete(waiter);
      waiter.reject(new GatewayError('QUOTA_STORE_UNAVAILABLE', `The quota store did not answer within ${this.timeoutMs} ms.`));
    }
    if (this.waiting.size === 0) {
      clearInterval(this.watchdog);
      this.watchdog = undefined;
    }
  }

  /** Throws QUOTA_STORE_UNAVAILABLE unless connected; only the first connection is waited for. */
  async ready(): Promise<void> {
    if (this.isReady()) return;
    const wait = this.waitUntil - Date.now();
    if (this.connecting && !this.stopped && wait > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.connecting, new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))]);
      clearTimeout(timer);
      if (this.isReady()) return;
    }
    throw new GatewayError('QUOTA_STORE_UNAVAILABLE', 'The quota store is not connected.');
  }

  /** Closes the connection(s): gracefully when Redis answers in time, at once otherwise. */
  async stop(): Promise<void> {
    this.stopped = true;
    const client = this.client;
    // Listed first: closing a cluster forgets its nodes, and a hung one must still be destroyed.
    const nodes: RedisNode[] = isCluster(client) ? openNodeClients(client) : [client];
    if (client.isOpen && nodes.every((n) => n.isReady)) {
      try {
        await this.timed(client.close());
        return;
      } catch {
        // A hung server would hold close() forever.
      }
    }
    if (isCluster(client) && client.isOpen) client.destroy();
    for (const n of nodes) if (n.isOpen) n.destroy();
  }
}
