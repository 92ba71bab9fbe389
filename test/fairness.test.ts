// The miss limiter's token buckets on a fake clock: refills happen when the test moves the clock,
// so every count below is exact, whatever the load on the machine.
import t from 'tap';
import { DEFAULT_MISS_LIMITS, type MissLimits, MissLimiter } from '../src/cache/miss-limiter.ts';
import { TokenBucket } from '../src/cache/token-bucket.ts';
import { PATIENT_RETRY, startHarness } from './helpers/harness.ts';
import { fakeClock } from './helpers/clock.ts';
import { refusingPort } from './helpers/local-servers.ts';

t.test('a token bucket: starts full, refills at its rate, never past its burst', async (t) => {
  const bucket = new TokenBucket(2, 3, 0);
  t.ok(bucket.full);
  t.same([bucket.take(0), bucket.take(0), bucket.take(0), bucket.take(0)], [true, true, true, false], 'the burst, then nothing');
  t.equal(bucket.secondsToNext, 0.5, 'one token every half second');
  t.notOk(bucket.take(250), 'half a token is not one');
  t.ok(bucket.take(500), 'a token after 0.5 s');
  t.notOk(bucket.refill(500));
  bucket.refill(60_000);
  t.ok(bucket.full, 'a long pause fills it');
  t.same([bucket.take(60_000), bucket.take(60_000), bucket.take(60_000), bucket.take(60_000)], [true, true, true, false], 'but only to the burst');
});

t.test('the miss limiter: per identity, per address and per node, nothing spent unless all three have room', async (t) => {
  const clock = fakeClock(0);
  const limits: MissLimits = { perIdentityPerSecond: 1, perIdentityBurst: 2, perClientPerSecond: 2, perClientBurst: 3, nodePerSecond: 4, nodeBurst: 5 };
  const limiter = new MissLimiter(limits, clock.now);
  const admit = (identity: string, client: string) => limiter.admit(identity, client)?.message.match(/from (this \w+)/)?.[1] ?? 'admitted';

  t.same([admit('a', '10.0.0.1'), admit('a', '10.0.0.1'), admit('a', '10.0.0.1')], ['admitted', 'admitted', 'this identity'], 'an identity\'s burst');
  t.equal(admit('b', '10.0.0.1'), 'admitted', 'its address still had room: the identity\'s refusal spent none of it');
  t.equal(admit('c', '10.0.0.1'), 'this pod', 'the address\'s burst of 3 is used');
  t.same([admit('d', '10.0.0.2'), admit('e', '10.0.0.3')], ['admitted', 'admitted'], 'other addresses');
  t.equal(admit('f', '10.0.0.4'), 'this node', 'the node\'s burst of 5 is used');
  t.match(limiter.admit('g', '10.0.0.5'), { code: 'TooManyRequests', status: 429, retryAfterSeconds: 1 }, 'the node refills 4/s: back within a second');

  clock.advance(500); // two node tokens, one for 10.0.0.1, half of one for each identity
  t.equal(admit('a', '10.0.0.1'), 'this identity', 'half a token is not a token');
  t.equal(admit('h', '10.0.0.1'), 'admitted', 'the address refilled 2/s');
  t.equal(admit('i', '10.0.0.6'), 'admitted');
  t.equal(admit('j', '10.0.0.7'), 'this node', 'two node tokens, both spent');

  clock.advance(500);
  t.equal(admit('a', '10.0.0.2'), 'admitted', 'the identity\'s next token, after a second, from any address');
  t.match(limiter.admit('a', '10.0.0.2'), { retryAfterSeconds: 1 }, 'Retry-After: whole seconds, at least one');
});

t.test('full buckets are let go of: an identity that missed once holds nothing for good', async (t) => {
  const clock = fakeClock(0);
  const limiter = new MissLimiter({ ...DEFAULT_MISS_LIMITS, perIdentityPerSecond: 0.1, perIdentityBurst: 2 }, clock.now);
  for (let i = 0; i < 100; i += 1) t.equal(limiter.admit(`once-${i}`, `10.0.0.${i}`), undefined);
  t.same([limiter.admit('busy', 'pod'), limiter.admit('busy', 'pod'), limiter.admit('busy', 'pod')?.code], [undefined, undefined, 'TooManyRequests']);
  t.same(limiter.tracked, { identities: 101, clients: 101 });
  clock.advance(10_000);
  t.equal(limiter.admit('new', 'pod'), undefined);
  t.same(limiter.tracked, { identities: 2, clients: 1 }, 'the once-missed ones had refilled; the new one and the one still refilling (1 of 2 tokens back) are kept');
  t.same([limiter.admit('busy', 'pod'), limiter.admit('busy', 'pod')?.code], [undefined, 'TooManyRequests'], 'the sweep forgot nothing that limits');
});

t.test('Retry-After says how long until the bucket that refused has a token', async (t) => {
  const clock = fakeClock(0);
  const limiter = new MissLimiter({ ...DEFAULT_MISS_LIMITS, perClientPerSecond: 0.25, perClientBurst: 1 }, clock.now);
  t.equal(limiter.admit('a', 'pod'), undefined);
  t.match(limiter.admit('b', 'pod'), { retryAfterSeconds: 4 }, 'one token every 4 s');
  clock.advance(2500);
  t.match(limiter.admit('b', 'pod'), { retryAfterSeconds: 2 }, '1.5 s to go, rounded up');
  clock.advance(1500);
  t.equal(limiter.admit('b', 'pod'), undefined);
});

t.test('a pod hammering misses is limited before it spends the quota; others and hits are not', async (t) => {
  const clock = fakeClock();
  const h = await startHarness(t, { now: clock.now, retry: PATIENT_RETRY, args: ['--max-client-miss-qps', '2', '--max-client-miss-burst', '5'] });
  const cached = await h.token({ podName: 'cached' });
  t.equal((await h.send({ authorization: cached, localAddress: '127.0.0.2' })).status, 200);

  const replies = [];
  for (let i = 0; i < 12; i += 1) replies.push(await h.send({ authorization: await h.token({ podName: `flood-${i}` }), localAddress: '127.0.0.2' }));
  t.same(replies.map((reply) => reply.status), [200, 200, 200, 200, ...Array(8).fill(429)], 'the rest of the burst of 5, then refused');
  t.match(replies[4], { json: { Code: 'TooManyRequests', Message: /this pod/ }, headers: { 'retry-after': '1' } }, 'a token every half second: back within a second');
  t.equal(h.emulator.callCount, 5, 'EKS Auth saw the burst, not 13 calls');

  clock.advance(1000);
  const later = [];
  for (let i = 0; i < 3; i += 1) later.push((await h.send({ authorization: await h.token({ podName: `later-${i}` }), localAddress: '127.0.0.2' })).status);
  t.same(later, [200, 200, 429], 'a second later: two more, at 2 per second');
  t.equal(h.emulator.callCount, 7);

  t.equal((await h.send({ authorization: cached, localAddress: '127.0.0.2' })).status, 200, 'a hit is never limited');
  t.equal((await h.send({ authorization: await h.token({ podName: 'neighbour' }), localAddress: '127.0.0.3' })).status, 200, 'another pod keeps being served');
  t.equal((await h.send({ authorization: 'garbage', localAddress: '127.0.0.2' })).json?.Code, 'MalformedToken', 'local refusals are answered as such');
  t.match(await h.agent.metrics.registry.metrics(), /pod_identity_cache_lookups_total\{outcome="limited"\} 9\n/);
});

t.test('the node-wide limit protects the account from many pods at once', async (t) => {
  const clock = fakeClock();
  const h = await startHarness(t, { now: clock.now, retry: PATIENT_RETRY, args: ['--max-upstream-qps', '3'] });
  const statuses: number[] = [];
  for (let i = 0; i < 6; i += 1) statuses.push((await h.send({ authorization: await h.token({ podName: `pod-${i}` }), localAddress: `127.0.1.${i + 1}` })).status);
  t.same(statuses, [200, 200, 200, 429, 429, 429], 'a burst of 3 for the node, whichever pods ask');
  t.equal(h.emulator.callCount, 3);
  clock.advance(1000);
  t.equal((await h.send({ authorization: await h.token({ podName: 'pod-6' }), localAddress: '127.0.1.7' })).status, 200, 'refilled after a second');
});

t.test('one identity hammering failed misses is limited on its own, not its whole address', async (t) => {
  const clock = fakeClock();
  // Every miss fails fast (a port that refuses) and is retryable, so nothing is cached or remembered.
  const refusing = await refusingPort(t);
  const h = await startHarness(t, { now: clock.now, retry: { ...PATIENT_RETRY, maxAttempts: 1 }, args: ['--endpoint', refusing.url] });
  const failing = await h.token({ podName: 'failing' });
  const codes: string[] = [];
  for (let i = 0; i < 20; i += 1) codes.push(String((await h.send({ authorization: failing })).json?.Code));
  t.same(codes, [...Array(5).fill('UpstreamUnavailable'), ...Array(15).fill('TooManyRequests')], 'a burst of 5 went upstream; the rest waited');
  const neighbour = await h.send({ authorization: await h.token({ podName: 'neighbour' }) });
  t.equal(neighbour.json?.Code, 'UpstreamUnavailable', 'a neighbour on the same address still goes upstream');

  clock.advance(1000);
  const next = [];
  for (let i = 0; i < 2; i += 1) next.push((await h.send({ authorization: failing })).json?.Code);
  t.same(next, ['UpstreamUnavailable', 'TooManyRequests'], 'then 1 per second');
});
