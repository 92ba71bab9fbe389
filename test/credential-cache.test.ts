import t from 'tap';
import { CredentialCache } from '../src/cache/credential-cache.ts';
import { AgentError, agentError } from '../src/errors.ts';
import type { CredentialExchange, ExchangeResult } from '../src/upstream/types.ts';

const HOUR = 3_600_000;

/** An upstream whose answers the test decides, one call at a time. */
function scriptedExchange(clock: { now: number }) {
  const calls: string[] = [];
  const pending: { resolve: (r: ExchangeResult) => void; reject: (e: Error) => void }[] = [];
  let serial = 0;
  const exchange: CredentialExchange = {
    exchange(token) {
      calls.push(token);
      return new Promise((resolve, reject) => pending.push({ resolve, reject }));
    },
  };
  const succeed = (lifetimeMs = 6 * HOUR) => {
    serial += 1;
    pending.shift()?.resolve({
      credentials: { accessKeyId: `ASIA${serial}`, secretAccessKey: 's', sessionToken: 't', accountId: '123456789012', expiresAt: clock.now + lifetimeMs },
      requestId: `r${serial}`,
    });
  };
  const fail = (error: AgentError) => pending.shift()?.reject(error);
  return { exchange, calls, succeed, fail, get waiting() { return pending.length; } };
}

function keyIdOf(body: Buffer): string {
  return (JSON.parse(body.toString()) as { AccessKeyId: string }).AccessKeyId;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Lets a lookup reach the upstream, answers it, and returns the lookup's result. */
async function settle<T>(lookup: Promise<T>, answer: () => void): Promise<T> {
  await tick();
  answer();
  return lookup;
}

function newCache(options: { maxSize?: number; retentionMs?: number } = {}) {
  const clock = { now: 0 };
  const upstream = scriptedExchange(clock);
  const cache = new CredentialCache({ exchange: upstream.exchange, maxSize: options.maxSize ?? 10, retentionMs: options.retentionMs ?? 3 * HOUR, now: () => clock.now });
  return { clock, upstream, cache };
}

t.test('concurrent misses share one upstream call; later requests are hits', async (t) => {
  const { upstream, cache } = newCache();
  const lookups = Promise.all([cache.get('tok'), cache.get('tok'), cache.get('tok')]);
  await tick();
  t.equal(upstream.calls.length, 1);
  upstream.succeed();
  const [first, second, third] = await lookups;
  t.same([first?.outcome, second?.outcome, third?.outcome], ['miss', 'coalesced', 'coalesced']);
  t.equal(first?.entry, second?.entry, 'every waiter gets the same entry');
  const hit = await cache.get('tok');
  t.equal(hit.outcome, 'hit');
  t.equal(hit.entry.body, first?.entry.body, 'the body is serialised once and reused');
  t.equal(upstream.calls.length, 1);
});

t.test('a failure reaches every waiter and is not cached', async (t) => {
  const { upstream, cache } = newCache();
  const lookups = Promise.allSettled([cache.get('tok'), cache.get('tok')]);
  await tick();
  upstream.fail(new AgentError('AccessDeniedException', 400, 'denied', { retryable: false }));
  const results = await lookups;
  t.match(results, [{ status: 'rejected', reason: { code: 'AccessDeniedException' } }, { status: 'rejected', reason: { code: 'AccessDeniedException' } }]);
  const retry = cache.get('tok');
  await tick();
  t.equal(upstream.calls.length, 2, 'the next request calls again');
  upstream.succeed();
  t.equal((await retry).outcome, 'miss');
});

t.test('renewal is due at two thirds of the lifetime or the retention, whichever is first', async (t) => {
  const { clock, upstream, cache } = newCache();
  const first = cache.get('tok');
  await tick();
  upstream.succeed(HOUR);
  t.equal((await first).entry.renewAt, (2 / 3) * HOUR);
  clock.now = 0.66 * HOUR;
  t.equal((await cache.get('tok')).outcome, 'hit');
  clock.now = 0.67 * HOUR;
  const renewed = cache.get('tok');
  await tick();
  upstream.succeed(6 * HOUR);
  const entry = (await renewed).entry;
  t.equal(keyIdOf(entry.body), 'ASIA2');
  t.equal(entry.renewAt, clock.now + 3 * HOUR, 'retention caps six-hour credentials at three hours');
});

t.test('stale credentials stand in during a retryable failure, never with under 15 s left', async (t) => {
  const { clock, upstream, cache } = newCache();
  await settle(cache.get('tok'), () => upstream.succeed(HOUR));
  clock.now = 50 * 60_000;
  const during = cache.get('tok');
  await tick();
  upstream.fail(agentError('UpstreamUnavailable', 'down'));
  const stale = await during;
  t.equal(stale.outcome, 'stale');
  t.equal(keyIdOf(stale.entry.body), 'ASIA1');

  clock.now = HOUR - 14_000;
  const late = cache.get('tok');
  await tick();
  upstream.fail(new AgentError('ThrottlingException', 429, 'slow down', { retryable: true }));
  await t.rejects(late, { code: 'ThrottlingException' }, 'credentials with 14 s left are not served');
});

t.test('a non-retryable answer drops the cached identity', async (t) => {
  const { clock, upstream, cache } = newCache();
  await settle(cache.get('tok'), () => upstream.succeed(HOUR));
  clock.now = 0.7 * HOUR;
  const renewal = cache.get('tok');
  await tick();
  upstream.fail(new AgentError('ResourceNotFoundException', 404, 'association deleted', { retryable: false }));
  await t.rejects(renewal, { code: 'ResourceNotFoundException' });
  t.equal(cache.size, 0);
});

t.test('credentials that expire too soon are refused, not cached', async (t) => {
  const { upstream, cache } = newCache();
  const first = cache.get('tok');
  await tick();
  upstream.succeed(10_000);
  await t.rejects(first, { code: 'UpstreamCredentialsExpired', status: 502 });
  t.equal(cache.size, 0);
});

t.test('bounded: the least recently used identity is evicted', async (t) => {
  const { upstream, cache } = newCache({ maxSize: 2 });
  for (const token of ['a', 'b']) await settle(cache.get(token), () => upstream.succeed());
  t.equal((await cache.get('a')).outcome, 'hit', 'a is now the most recently used');
  await settle(cache.get('c'), () => upstream.succeed());
  t.equal(cache.size, 2);
  t.equal((await cache.get('a')).outcome, 'hit');
  const b = cache.get('b');
  await tick();
  t.equal(upstream.waiting, 1, 'b was evicted, so it goes upstream again');
  upstream.succeed();
  t.equal((await b).outcome, 'miss');
});

t.test('size 0 or retention 0 disables caching but keeps single flight', async (t) => {
  for (const options of [{ maxSize: 0, retentionMs: 3 * HOUR }, { maxSize: 10, retentionMs: 0 }]) {
    const { upstream, cache } = newCache(options);
    const both = Promise.all([cache.get('tok'), cache.get('tok')]);
    await tick();
    t.equal(upstream.calls.length, 1);
    upstream.succeed();
    t.same((await both).map((lookup) => lookup.outcome), ['miss', 'coalesced']);
    const again = cache.get('tok');
    await tick();
    t.equal(upstream.calls.length, 2, 'nothing was kept');
    upstream.succeed();
    await again;
    t.equal(cache.size, 0);
  }
});
