import t from 'tap';
import { DEFAULT_RETRY_POLICY } from '../src/upstream/retry.ts';
import { NODE_CREDENTIALS, startHarness } from './helpers/harness.ts';
import { silentServer } from './helpers/local-servers.ts';

const { maxAttempts } = DEFAULT_RETRY_POLICY;

for (const [name, fault, status, code] of [
  ['a sustained 5xx outage', { kind: 'error', status: 503, type: 'ServiceUnavailableException' }, 503, 'ServiceUnavailableException'],
  ['a throttling storm', { kind: 'error', status: 429, type: 'ThrottlingException' }, 429, 'ThrottlingException'],
  ['connection resets mid-response', { kind: 'reset' }, 503, 'UpstreamUnavailable'],
] as const) {
  t.test(`${name}: cached identities keep working, new ones fail within the retry policy, recovery is automatic`, async (t) => {
    const h = await startHarness(t);
    const cached = await h.token({ podName: 'cached' });
    t.equal((await h.send({ authorization: cached })).status, 200);
    h.emulator.inject(fault, 10_000);
    for (let i = 0; i < 5; i += 1) {
      const before = h.emulator.callCount;
      const value = await h.send({ authorization: await h.token({ podName: `new-${i}` }) });
      t.equal(value.status, status, `new identity ${i}: ${status}`);
      t.equal(value.json?.Code, code);
      // The agent's own decisions, not the time a loaded machine took: it retried, and it gave up by
      // itself within the policy's attempts (its budget is test/retry.test.ts's, on a fake clock).
      const made = h.emulator.callCount - before;
      t.ok(made >= 2 && made <= maxAttempts, `${made} attempts: retried, and at most the policy's ${maxAttempts}`);
      t.equal((await h.send({ authorization: cached })).status, 200, 'the cached identity is still served');
    }
    h.emulator.clearFaults();
    t.equal((await h.send({ authorization: await h.token({ podName: 'after' }) })).status, 200, 'recovered by itself once the fault cleared');
  });
}

// What a name that does not resolve meant here (an EKS Auth nobody reaches), without betting on how
// fast this machine's resolver gives up: an endpoint of the test's own that accepts and never answers.
t.test('an EKS Auth that never answers: 503 UpstreamUnavailable, every attempt cut by its deadline, within the policy', async (t) => {
  const silent = await silentServer(t);
  const h = await startHarness(t, { args: ['--endpoint', silent.url] });
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 503);
  t.match(reply.json, { Code: 'UpstreamUnavailable', Message: 'EKS Auth did not answer in time' });
  t.ok(silent.requests >= 2 && silent.requests <= maxAttempts, `${silent.requests} attempts, each abandoned at its deadline`);
});

t.test('no attempt outlives the budget: with a budget shorter than an attempt, the attempt is cut at the budget', async (t) => {
  const silent = await silentServer(t);
  // Were the attempt given its own 10 minutes, this request would outlast the test's time limit.
  const h = await startHarness(t, { args: ['--endpoint', silent.url], retry: { ...DEFAULT_RETRY_POLICY, attemptTimeoutMs: 10 * 60_000, budgetMs: 300 } });
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 503);
  t.match(reply.json, { Code: 'UpstreamUnavailable', Message: 'EKS Auth did not answer in time' });
  t.ok(silent.requests >= 1 && silent.requests <= maxAttempts);
});

t.test('node credentials rotating mid-run are picked up for the next signature', async (t) => {
  const rotated = { accessKeyId: 'AKIANODEROTATED00002', secretAccessKey: 'node-secret-rotated-00000000000000000000' };
  let current: { accessKeyId: string; secretAccessKey: string } = NODE_CREDENTIALS;
  const { buildAgent } = await import('../src/agent.ts');
  const { parseServerArgs } = await import('../src/config/index.ts');
  const { createLogger } = await import('../src/observability/logger.ts');
  const { createLogAudit } = await import('./helpers/log-audit.ts');
  const { sendRequest } = await import('./helpers/harness.ts');
  const h = await startHarness(t, { emulator: { nodeCredentials: [NODE_CREDENTIALS, rotated] } });
  const audit = createLogAudit();
  audit.secrets.add(rotated.secretAccessKey).add(NODE_CREDENTIALS.secretAccessKey);
  const config = parseServerArgs(['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', h.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0'], {}).config!;
  const agent = buildAgent(config, { logger: createLogger({ level: 'info', destination: audit.sink }), kubernetes: null, credentialProvider: async () => ({ ...current, expiration: new Date(Date.now() + 3600_000) }) });
  const addresses = await agent.listen();
  t.teardown(() => agent.close());
  const port = addresses.credentials[0]!.port;
  t.equal((await sendRequest(port, { authorization: await h.token({ podName: 'before' }) })).status, 200);
  current = rotated;
  t.equal((await sendRequest(port, { authorization: await h.token({ podName: 'after' }) })).status, 200);
  t.same(h.emulator.calls.map((call) => call.accessKeyId), [NODE_CREDENTIALS.accessKeyId, rotated.accessKeyId]);
  t.match(await agent.metrics.registry.metrics(), /pod_identity_node_credentials_expiry_timestamp_seconds \d{10}/);
  t.same(audit.leaks(), []);
});
