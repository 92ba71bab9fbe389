import { getHeapStatistics } from 'node:v8';
import t from 'tap';
import { type CacheResult, CredentialCache, type CredentialCacheOptions } from '../src/cache/credential-cache.ts';
import { AgentError, agentError } from '../src/errors.ts';
import type { CacheRequest } from '../src/cache/credential-cache.ts';
import type { ExchangeRequest, ExchangeResult } from '../src/upstream/types.ts';
import { eventually } from './helpers/eventually.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function tokenFor(name: string, expiresAtMs = 10 * DAY, podUid?: string, serviceAccount = 'app'): CacheRequest {
  const identity = podUid === undefined ? undefined : { namespace: 'default', serviceAccount, podName: `pod-${name}`, podUid };
  return { key: `key-${name}`, token: `raw-${name}`, tokenExpiresAt: expiresAtMs, identity };
}

/** An upstream whose answers the test gives, one call at a time, in order. */
function scriptedUpstream(clock: { now: number }) {
  const calls: string[] = [];
  const singleAttempt: boolean[] = [];
  const pending: { resolve: (r: ExchangeResult) => void; reject: (e: Error) => void }[] = [];
  let serial = 0;
  return {
    calls,
    singleAttempt,
    get waiting() {
      return pending.length;
    },
    name: 'scripted',
    exchange: ({ token }: ExchangeRequest, options?: { singleAttempt?: boolean }) => {
      calls.push(token);
      singleAttempt.push(options?.singleAttempt === true);
      return new Promise<ExchangeResult>((resolve, reject) => pending.push({ resolve, reject }));
    },
    succeed(lifetimeMs = 6 * HOUR) {
      serial += 1;
      const credentials = { accessKeyId: `ASIA${serial}`, secretAccessKey: 's', sessionToken: 't', accountId: '123456789012', expiresAt: clock.now + lifetimeMs };
      pending.shift()?.resolve({ credentials, requestId: `r${serial}` });
    },
    fail(error: AgentError) {
      pending.shift()?.reject(error);
    },
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Lets a lookup reach the upstream, answers it, and returns the lookup's result. */
async function settle(lookup: Promise<CacheResult>, answer: () => void): Promise<CacheResult> {
  await tick();
  answer();
  return lookup;
}

function newCache(options: Partial<CredentialCacheOptions> = {}) {
  const clock = { now: 0 };
  const upstream = scriptedUpstream(clock);
  const events: string[] = [];
  const cache = new CredentialCache({
    exchange: upstream,
    maxSize: 10,
    retentionMs: 3 * HOUR,
    renewalsPerSecond: 100,
    now: () => clock.now,
    random: () => 0,
    observer: { renewal: (report) => events.push(`renewal:${report.outcome}`), eviction: (reason) => events.push(`eviction:${reason}`) },
    ...options,
  });
  return { clock, upstream, cache, events };
}

function keyIdOf(result: CacheResult): string {
  if (!result.ok) throw result.error;
  return (JSON.parse(result.entry.body.toString()) as { AccessKeyId: string }).AccessKeyId;
}

const throttled = () => new AgentError('ThrottlingException', 429, 'slow down', { retryable: true });
const notFound = () => new AgentError('ResourceNotFoundException', 404, 'no association', { retryable: false });

t.test('200 concurrent requests for one token make exactly one upstream call', async (t) => {
  const { upstream, cache } = newCache();
  const lookups = Promise.all(Array.from({ length: 200 }, () => cache.get(tokenFor('a'))));
  await tick();
  t.equal(upstream.calls.length, 1);
  // Every call answered, so that a broken single flight fails here rather than hanging the file.
  while (upstream.waiting > 0) upstream.succeed();
  const results = await lookups;
  t.equal(results.filter((r) => r.outcome === 'miss').length, 1);
  t.equal(results.filter((r) => r.outcome === 'coalesced').length, 199);
  t.ok(results.every((r) => r.ok && results[0]?.ok && r.entry === results[0].entry), 'every waiter got the same entry');
  const hit = await cache.get(tokenFor('a'));
  t.equal(hit.outcome, 'hit');
  t.ok(hit.ok && results[0]?.ok && hit.entry === results[0].entry && hit.entry.body === results[0].entry.body, 'the body is serialised once and reused: the same entry answers the hit');
  t.equal(upstream.calls.length, 1);
});

t.test('1,000 concurrent requests over N distinct tokens make exactly N calls', async (t) => {
  const N = 100;
  const calls = new Map<string, number>();
  const cache = new CredentialCache({
    maxSize: 2000,
    retentionMs: 3 * HOUR,
    exchange: {
      name: 'test',
      async exchange({ token }) {
        calls.set(token, (calls.get(token) ?? 0) + 1);
        await new Promise((resolve) => setTimeout(resolve, 5));
        return { credentials: { accessKeyId: 'ASIA', secretAccessKey: 's', sessionToken: 't', accountId: undefined, expiresAt: Date.now() + HOUR }, requestId: undefined };
      },
    },
  });
  const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => cache.get(tokenFor(`t${(i * 7919) % N}`))));
  t.equal(calls.size, N);
  t.ok([...calls.values()].every((count) => count === 1), 'one call per token');
  t.ok(results.every((r) => r.ok));
  t.equal(cache.size, N);
});

t.test('waiters receive the leader\'s error; a late arrival after a temporary failure starts a new call', async (t) => {
  const { upstream, cache } = newCache();
  const error = throttled();
  const lookups = Promise.all([cache.get(tokenFor('a')), cache.get(tokenFor('a'))]);
  await tick();
  while (upstream.waiting > 0) upstream.fail(error);
  const [leader, waiter] = await lookups;
  t.match(leader, { ok: false, outcome: 'miss', error });
  t.match(waiter, { ok: false, outcome: 'coalesced', error });
  t.ok(!waiter?.ok && waiter?.error === error, 'the very same error');
  const late = await settle(cache.get(tokenFor('a')), () => upstream.succeed());
  t.equal(late.outcome, 'miss');
  t.equal(upstream.calls.length, 2);
});

t.test('negative cache: an upstream verdict is repeated without a call for its TTL', async (t) => {
  const { clock, upstream, cache } = newCache({ negativeTtlMs: 10_000 });
  const first = await settle(cache.get(tokenFor('a')), () => upstream.fail(notFound()));
  t.match(first, { ok: false, outcome: 'miss', error: { code: 'ResourceNotFoundException' } });
  clock.now = 9_999;
  const retry = await cache.get(tokenFor('a'));
  t.match(retry, { ok: false, outcome: 'negative', error: { code: 'ResourceNotFoundException', status: 404 } });
  t.equal(upstream.calls.length, 1);
  clock.now = 10_000;
  const after = await settle(cache.get(tokenFor('a')), () => upstream.succeed());
  t.equal(after.outcome, 'miss');
  t.equal(upstream.calls.length, 2);
  t.equal((await settle(cache.get(tokenFor('b')), () => upstream.fail(throttled()))).outcome, 'miss');
  t.equal((await settle(cache.get(tokenFor('b')), () => upstream.succeed())).outcome, 'miss', 'temporary failures are not remembered');
});

t.test('refresh ahead: renewed in the background before expiry; requests never wait meanwhile', async (t) => {
  const { clock, upstream, cache, events } = newCache();
  const first = await settle(cache.get(tokenFor('a')), () => upstream.succeed(HOUR));
  t.ok(first.ok);
  if (!first.ok) return;
  t.equal(first.entry.renewAt, (2 / 3) * HOUR, 'due at two thirds of a one-hour lifetime (no jitter drawn)');
  t.equal(first.entry.mustRefreshAt, HOUR - 5 * 60_000);
  clock.now = 0.6 * HOUR;
  t.equal(cache.sweep(), 0, 'nothing due yet');
  clock.now = 0.7 * HOUR;
  t.equal(cache.sweep(), 1, 'due: one renewal started');
  t.equal(upstream.waiting, 1);
  const during = await cache.get(tokenFor('a'));
  t.equal(during.outcome, 'hit', 'a request during the renewal does not wait for it');
  t.equal(keyIdOf(during), 'ASIA1');
  upstream.succeed(HOUR);
  await tick();
  t.same(events, ['renewal:renewed']);
  const after = await cache.get(tokenFor('a'));
  t.equal(after.outcome, 'hit');
  t.equal(keyIdOf(after), 'ASIA2', 'the renewed credentials are served');
  t.equal(upstream.calls.length, 2, 'the request after the renewal made no call of its own');
  t.same(upstream.singleAttempt, [false, true], 'a pod\'s miss may retry at once; a background renewal makes one attempt');
});

t.test("a sweep allocates nothing per cached identity: V8's memory reducer waits for an idle agent's allocation to stop", async (t) => {
  const identities = 10_000;
  const credentials = { accessKeyId: 'ASIA1', secretAccessKey: 's', sessionToken: 't', accountId: '123456789012', expiresAt: 6 * HOUR };
  const { cache } = newCache({ maxSize: identities, exchange: { name: 'instant', exchange: async () => ({ credentials, requestId: 'r' }) } });
  for (let i = 0; i < identities; i += 1) await cache.get(tokenFor(String(i)));
  // The agent sweeps every second: by the time a node holds this many, the sweep is optimized code.
  for (let i = 0; i < 50; i += 1) t.equal(cache.sweep(), 0);
  // A collection during a sweep shows as a fall in use: the largest rise of a few is the sweep's own.
  let most = 0;
  for (let i = 0; i < 5; i += 1) {
    const before = getHeapStatistics().used_heap_size;
    cache.sweep();
    most = Math.max(most, getHeapStatistics().used_heap_size - before);
  }
  t.ok(most / identities < 16, `${(most / identities).toFixed(1)} bytes allocated per identity by one sweep (for-of over the map made about 100)`);
});

t.test('start(): the timer sweeps, renews, and the next request is a hit on the renewed credentials', async (t) => {
  const { clock, upstream, cache, events } = newCache({ sweepIntervalMs: 5 });
  await settle(cache.get(tokenFor('a')), () => upstream.succeed(HOUR));
  clock.now = 0.7 * HOUR;
  cache.start();
  t.teardown(() => cache.close());
  await eventually(() => upstream.waiting === 1, 'the timer\'s sweep to start a renewal');
  upstream.succeed(HOUR);
  await eventually(() => events.includes('renewal:renewed'), 'the renewal to be stored');
  const after = await cache.get(tokenFor('a'));
  t.equal(after.outcome, 'hit');
  t.equal(keyIdOf(after), 'ASIA2');
  t.equal(upstream.calls.length, 2, 'one miss, one renewal, nothing else');
  t.same(events, ['renewal:renewed'], 'renewed once: the clock has not moved since');
});

t.test('retention caps the renewal time; jitter spreads identities fetched together', async (t) => {
  const draws = [0, 0.5, 1];
  const { upstream, cache } = newCache({ random: () => draws.shift() ?? 0 });
  const renewAts: number[] = [];
  for (const name of ['a', 'b', 'c']) {
    const result = await settle(cache.get(tokenFor(name)), () => upstream.succeed(6 * HOUR));
    if (result.ok) renewAts.push(result.entry.renewAt);
  }
  t.same(renewAts, [3 * HOUR, 3 * HOUR * 0.95, 3 * HOUR * 0.9]);
});

t.test('forget the dead: no renewal for an expired token, nor for identities nobody holds credentials of', async (t) => {
  const { clock, upstream, cache, events } = newCache();
  await settle(cache.get(tokenFor('short-token', 0.5 * HOUR)), () => upstream.succeed(HOUR));
  await settle(cache.get(tokenFor('idle')), () => upstream.succeed(HOUR));
  clock.now = 0.7 * HOUR;
  t.equal(cache.sweep(), 1, 'only the identity with a live token is renewed');
  t.same(events, ['eviction:token_expired']);
  upstream.succeed(HOUR);
  await tick();
  t.equal(cache.size, 1);
  // The pod never came back for the renewed credentials; its copy expired at 1 h.
  clock.now = 1.4 * HOUR;
  t.equal(cache.sweep(), 0);
  t.same(events, ['eviction:token_expired', 'renewal:renewed', 'eviction:idle']);
  t.equal(cache.size, 0);
  t.equal(upstream.calls.length, 3, 'one renewal in all, for the identity that was still live');
});

t.test('renewals are bounded by the rate and by concurrency', async (t) => {
  const { clock, upstream, cache } = newCache({ renewalsPerSecond: 3, renewalConcurrency: 4 });
  for (let i = 0; i < 10; i += 1) await settle(cache.get(tokenFor(`p${i}`)), () => upstream.succeed(HOUR));
  clock.now = 0.7 * HOUR;
  t.equal(cache.sweep(), 3, 'three per second');
  t.equal(cache.sweep(), 0, 'the budget is spent until time passes');
  clock.now += 1000;
  t.equal(cache.sweep(), 1, 'only one more: four are in flight');
  clock.now += 5000;
  t.equal(cache.sweep(), 0, 'still four in flight, however much budget');
  upstream.succeed(HOUR);
  upstream.succeed(HOUR);
  await tick();
  t.equal(cache.sweep(), 2, 'two finished, two more start');
});

t.test('stale if error: served through an outage, never under the minimum lifetime', async (t) => {
  const { clock, upstream, cache, events } = newCache();
  await settle(cache.get(tokenFor('a')), () => upstream.succeed(HOUR));
  clock.now = 0.7 * HOUR;
  cache.sweep();
  upstream.fail(throttled());
  await tick();
  t.same(events, ['renewal:failed']);
  t.equal((await cache.get(tokenFor('a'))).outcome, 'hit', 'still before the must-refresh point');
  clock.now = HOUR - 60_000;
  const stale = await settle(cache.get(tokenFor('a')), () => upstream.fail(agentError('UpstreamUnavailable', 'down')));
  t.equal(stale.outcome, 'stale');
  t.equal(keyIdOf(stale), 'ASIA1');
  clock.now = HOUR - 14_000;
  const late = await settle(cache.get(tokenFor('a')), () => upstream.fail(throttled()));
  t.match(late, { ok: false, error: { code: 'ThrottlingException' } }, 'credentials with 14 s left are not served');
});

t.test('refused by the miss limiter: usable cached credentials stand in, never under the minimum lifetime', async (t) => {
  let refuse = false;
  const asked: string[] = [];
  const { clock, upstream, cache } = newCache({
    admitMiss: (request) => {
      asked.push(request.key);
      return refuse ? agentError('TooManyRequests', 'slow down', { retryAfterSeconds: 1 }) : undefined;
    },
  });
  refuse = true;
  t.match(await cache.get(tokenFor('a')), { ok: false, outcome: 'limited', error: { code: 'TooManyRequests', status: 429 } }, 'nothing cached: the refusal');
  refuse = false;
  await settle(cache.get(tokenFor('a')), () => upstream.succeed(HOUR));
  refuse = true;
  clock.now = HOUR - 60_000; // past mustRefreshAt: a miss, which the limiter refuses
  const stale = await cache.get(tokenFor('a'));
  t.equal(stale.outcome, 'stale', 'a minute left: served');
  t.equal(keyIdOf(stale), 'ASIA1');
  clock.now = HOUR - 14_000;
  t.match(await cache.get(tokenFor('a')), { ok: false, outcome: 'limited', error: { code: 'TooManyRequests' } }, '14 s left: not served, refused');
  t.equal(upstream.calls.length, 1, 'no call for any refused request');
  t.equal(asked.length, 4, 'every miss was asked about');
});

t.test('a request joining a call in flight is never refused by the miss limiter', async (t) => {
  let admitted = 0;
  const { upstream, cache } = newCache({ admitMiss: () => (admitted++ === 0 ? undefined : agentError('TooManyRequests', 'slow down', { retryAfterSeconds: 1 })) });
  const both = Promise.all([cache.get(tokenFor('a')), cache.get(tokenFor('a'))]);
  await tick();
  upstream.succeed(HOUR);
  t.same((await both).map((lookup) => lookup.outcome), ['miss', 'coalesced']);
  t.equal(admitted, 1, 'asked once, for the call that was started');
});

t.test('a failed renewal is retried later with backoff', async (t) => {
  const { clock, upstream, cache } = newCache();
  const first = await settle(cache.get(tokenFor('a')), () => upstream.succeed(HOUR));
  clock.now = 0.7 * HOUR;
  cache.sweep();
  upstream.fail(throttled());
  await tick();
  t.ok(first.ok && first.entry.renewAt === clock.now + 5_000, 'first retry 10 s, halved by the (zero) jitter draw');
  t.equal(cache.sweep(), 0);
  clock.now += 5_000;
  t.equal(cache.sweep(), 1);
});

t.test('a non-retryable answer during renewal drops the identity', async (t) => {
  const { clock, upstream, cache, events } = newCache();
  await settle(cache.get(tokenFor('a')), () => upstream.succeed(HOUR));
  clock.now = 0.7 * HOUR;
  cache.sweep();
  upstream.fail(notFound());
  await tick();
  t.same(events, ['eviction:rejected', 'renewal:dropped']);
  t.equal(cache.size, 0);
  t.match(await cache.get(tokenFor('a')), { ok: false, outcome: 'negative' }, 'the pod hears the verdict without another call');
});

t.test('credentials that expire too soon are refused, not cached', async (t) => {
  const { upstream, cache } = newCache();
  const result = await settle(cache.get(tokenFor('a')), () => upstream.succeed(10_000));
  t.match(result, { ok: false, error: { code: 'UpstreamCredentialsExpired', status: 502 } });
  t.equal(cache.size, 0);
});

t.test('bounded: the least recently used identity is evicted', async (t) => {
  const { upstream, cache, events } = newCache({ maxSize: 2 });
  for (const name of ['a', 'b']) await settle(cache.get(tokenFor(name)), () => upstream.succeed());
  t.equal((await cache.get(tokenFor('a'))).outcome, 'hit', 'a is now the most recently used');
  await settle(cache.get(tokenFor('c')), () => upstream.succeed());
  t.same(events, ['eviction:capacity']);
  t.equal(cache.size, 2);
  t.equal((await cache.get(tokenFor('a'))).outcome, 'hit');
  t.equal((await cache.get(tokenFor('c'))).outcome, 'hit');
  const b = await settle(cache.get(tokenFor('b')), () => upstream.succeed());
  t.equal(b.outcome, 'miss', 'b, least recently used, was the one evicted');
});

t.test('size 0 or retention 0 disables caching but keeps single flight', async (t) => {
  for (const options of [{ maxSize: 0 }, { retentionMs: 0 }]) {
    const { upstream, cache } = newCache(options);
    const both = Promise.all([cache.get(tokenFor('a')), cache.get(tokenFor('a'))]);
    await tick();
    t.equal(upstream.calls.length, 1);
    while (upstream.waiting > 0) upstream.succeed();
    t.same((await both).map((lookup) => lookup.outcome), ['miss', 'coalesced']);
    await settle(cache.get(tokenFor('a')), () => upstream.fail(notFound()));
    t.equal((await settle(cache.get(tokenFor('a')), () => upstream.succeed())).outcome, 'miss', 'no negative caching either');
    t.equal(upstream.calls.length, 3);
    t.equal(cache.size, 0);
  }
});

t.test('an identity key: a rotated token is a hit, and renewals use the newest token', async (t) => {
  const { clock, upstream, cache } = newCache();
  const identity = (token: string, expiresAtMs: number): CacheRequest => ({ key: 'pod-identity-key', token, tokenExpiresAt: expiresAtMs, identity: { namespace: 'default', serviceAccount: 'app', podName: 'web', podUid: 'uid-1' } });
  await settle(cache.get(identity('token-1', DAY)), () => upstream.succeed(HOUR));
  t.equal((await cache.get(identity('token-2', 2 * DAY))).outcome, 'hit', 'the kubelet rotated the token: still a hit');
  clock.now = 0.7 * HOUR;
  cache.sweep();
  t.same(upstream.calls, ['token-1', 'token-2'], 'the renewal sent the newer token');
  upstream.succeed(HOUR);
});

t.test('a deleted pod\'s credentials are dropped and never renewed', async (t) => {
  const { clock, upstream, cache, events } = newCache();
  await settle(cache.get(tokenFor('a', DAY, 'uid-a')), () => upstream.succeed(HOUR));
  await settle(cache.get(tokenFor('b', DAY, 'uid-b')), () => upstream.succeed(HOUR));
  cache.forgetPod('uid-a');
  t.same(events, ['eviction:pod_deleted']);
  clock.now = 0.7 * HOUR;
  t.equal(cache.sweep(), 1, 'only the live pod is renewed');
  t.same(upstream.calls, ['raw-a', 'raw-b', 'raw-b']);
});

t.test('a fetch in flight when its pod is deleted answers but stores nothing', async (t) => {
  const { upstream, cache } = newCache();
  const lookup = cache.get(tokenFor('a', DAY, 'uid-a'));
  await tick();
  cache.forgetPod('uid-a');
  upstream.succeed(HOUR);
  t.equal((await lookup).outcome, 'miss');
  t.equal(cache.size, 0, 'nothing left to renew for a deleted pod');
});

t.test('an association change drops the affected identities\' credentials and every remembered refusal', async (t) => {
  const { upstream, cache, events } = newCache();
  await settle(cache.get(tokenFor('a', DAY, 'uid-a', 'app')), () => upstream.succeed(HOUR));
  await settle(cache.get(tokenFor('b', DAY, 'uid-b', 'other')), () => upstream.succeed(HOUR));
  t.equal((await settle(cache.get(tokenFor('c', DAY, 'uid-c', 'unassociated')), () => upstream.fail(notFound()))).outcome, 'miss');
  t.equal((await cache.get(tokenFor('c', DAY, 'uid-c', 'unassociated'))).outcome, 'negative', 'the refusal is remembered');
  cache.invalidate((identity) => identity.serviceAccount === 'app');
  t.same(events, ['eviction:association_changed'], 'only the changed service account\'s entry goes');
  t.equal((await cache.get(tokenFor('b', DAY, 'uid-b', 'other'))).outcome, 'hit');
  t.equal((await settle(cache.get(tokenFor('a', DAY, 'uid-a', 'app')), () => upstream.succeed(HOUR))).outcome, 'miss', 'asked anew');
  t.equal((await settle(cache.get(tokenFor('c', DAY, 'uid-c', 'unassociated')), () => upstream.succeed(HOUR))).outcome, 'miss', 'the refusal was forgotten: the new association may cover it');
});

t.test('a call in flight when its association changes: answered to those waiting, never kept, never joined', async (t) => {
  const { upstream, cache } = newCache();
  const before = cache.get(tokenFor('a', DAY, 'uid-a'));
  await tick();
  cache.invalidate((identity) => identity.podUid === 'uid-a');
  const after = cache.get(tokenFor('a', DAY, 'uid-a'));
  await tick();
  t.equal(upstream.calls.length, 2, 'a request after the change does not join the call for the old role');
  upstream.succeed(HOUR);
  upstream.succeed(HOUR);
  t.equal(keyIdOf(await before), 'ASIA1', 'the request made before the change gets its answer');
  t.equal(keyIdOf(await after), 'ASIA2', 'the one made after gets the new call\'s');
  t.equal(cache.size, 1);
  t.equal(keyIdOf(await cache.get(tokenFor('a', DAY, 'uid-a'))), 'ASIA2', 'only the new call was kept');
});

t.test('a refusal from a call begun before an association change is not remembered', async (t) => {
  const { upstream, cache } = newCache();
  const before = cache.get(tokenFor('a', DAY, 'uid-a'));
  await tick();
  cache.invalidate(() => true);
  upstream.fail(notFound());
  t.equal((await before).ok, false);
  t.equal((await settle(cache.get(tokenFor('a', DAY, 'uid-a')), () => upstream.succeed(HOUR))).outcome, 'miss', 'the new association is asked for at once');
});

t.test('credentials dropped by an association change never stand in as stale', async (t) => {
  const { clock, upstream, cache } = newCache();
  await settle(cache.get(tokenFor('a', DAY, 'uid-a')), () => upstream.succeed(HOUR));
  clock.now = HOUR - 4 * 60_000; // past mustRefreshAt: the next request waits for a call
  const lookup = cache.get(tokenFor('a', DAY, 'uid-a'));
  await tick();
  cache.invalidate(() => true);
  upstream.fail(throttled());
  const result = await lookup;
  t.equal(result.ok, false, 'the old role\'s credentials are not served');
  t.equal(result.outcome, 'miss');
});

t.test('other identities\' calls are untouched by an association change', async (t) => {
  const { upstream, cache } = newCache();
  const other = cache.get(tokenFor('b', DAY, 'uid-b', 'other'));
  await tick();
  cache.invalidate((identity) => identity.serviceAccount === 'app');
  upstream.succeed(HOUR);
  t.equal((await other).outcome, 'miss');
  t.equal(cache.size, 1, 'kept');
});
