import t from 'tap';
import { PATIENT_RETRY, startHarness } from './helpers/harness.ts';

// Hundreds of connections at once can stall this process's event loop past the shipped 500 ms
// attempt timeout, and a cut attempt is a second call: the counts below are the cache's, so time is
// taken out of the upstream's part (PATIENT_RETRY).
t.test('over real sockets: 200 concurrent requests with one token make one EKS Auth call', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const token = await h.token();
  h.emulator.inject({ kind: 'latency', ms: 100 });
  const replies = await Promise.all(Array.from({ length: 200 }, () => h.send({ authorization: token })));
  t.ok(replies.every((reply) => reply.status === 200));
  t.equal(new Set(replies.map((reply) => reply.json?.AccessKeyId)).size, 1, 'everyone got the same credentials');
  t.equal(h.emulator.callCount, 1);
  t.match(await h.agent.metrics.registry.metrics(), /pod_identity_cache_lookups_total\{outcome="miss"\} 1\n/);
});

t.test('over real sockets: 1,000 concurrent requests over 20 tokens make 20 calls', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const tokens = await Promise.all(Array.from({ length: 20 }, (_, i) => h.token({ podName: `pod-${i}` })));
  h.emulator.inject({ kind: 'latency', ms: 50 }, 1000);
  const replies = await Promise.all(Array.from({ length: 1000 }, (_, i) => h.send({ authorization: tokens[i % 20] as string })));
  t.equal(replies.filter((reply) => reply.status === 200).length, 1000);
  t.equal(h.emulator.callCount, 20);
});
