import t from 'tap';
import { startHarness } from './helpers/harness.ts';

t.test('a pod hammering misses is limited before it spends the quota; others and hits are not', async (t) => {
  const h = await startHarness(t, { args: ['--max-client-miss-qps', '2', '--max-client-miss-burst', '5'] });
  const cached = await h.token({ podName: 'cached' });
  t.equal((await h.send({ authorization: cached, localAddress: '127.0.0.2' })).status, 200);

  const replies = [];
  for (let i = 0; i < 12; i += 1) replies.push(await h.send({ authorization: await h.token({ podName: `flood-${i}` }), localAddress: '127.0.0.2' }));
  const limited = replies.filter((reply) => reply.status === 429);
  t.ok(limited.length >= 6, `${limited.length} of 12 misses refused`);
  t.match(limited[0], { json: { Code: 'TooManyRequests', Message: /this pod/ }, headers: { 'retry-after': /^\d+$/ } });
  t.ok(h.emulator.callCount <= 1 + 5 + 2, `EKS Auth saw ${h.emulator.callCount} calls, not 13`);

  t.equal((await h.send({ authorization: cached, localAddress: '127.0.0.2' })).status, 200, 'a hit is never limited');
  t.equal((await h.send({ authorization: await h.token({ podName: 'neighbour' }), localAddress: '127.0.0.3' })).status, 200, 'another pod keeps being served');
  t.equal((await h.send({ authorization: 'garbage', localAddress: '127.0.0.2' })).json?.Code, 'MalformedToken', 'local refusals are answered as such');
  t.match(await h.agent.metrics.registry.metrics(), /pod_identity_cache_lookups_total\{outcome="limited"\} \d+/);
});

t.test('the node-wide limit protects the account from many pods at once', async (t) => {
  const h = await startHarness(t, { args: ['--max-upstream-qps', '3'] });
  const statuses: number[] = [];
  for (let i = 0; i < 6; i += 1) statuses.push((await h.send({ authorization: await h.token({ podName: `pod-${i}` }), localAddress: `127.0.1.${i + 1}` })).status);
  t.same(statuses.slice(0, 3), [200, 200, 200]);
  t.ok(statuses.slice(3).includes(429), `then refused: ${statuses.join(', ')}`);
  t.ok(h.emulator.callCount <= 4);
});

t.test('one identity hammering failed misses is limited on its own, not its whole address', async (t) => {
  const h = await startHarness(t);
  const failing = await h.token({ podName: 'failing' });
  await h.emulator.close(); // every miss now fails fast (connection refused) and is retryable
  const started = performance.now();
  const codes: string[] = [];
  for (let i = 0; i < 20; i += 1) codes.push(String((await h.send({ authorization: failing })).json?.Code));
  const seconds = (performance.now() - started) / 1000;
  const reached = codes.filter((code) => code === 'UpstreamUnavailable').length;
  t.ok(reached <= 5 + Math.ceil(seconds), `${reached} of 20 went upstream in ${seconds.toFixed(1)} s: a burst of 5, then 1 per second`);
  t.ok(codes.includes('TooManyRequests'), 'the rest waited');
  const neighbour = await h.send({ authorization: await h.token({ podName: 'neighbour' }) });
  t.equal(neighbour.json?.Code, 'UpstreamUnavailable', 'a neighbour on the same address still goes upstream');
});
