import { request } from 'node:http';
import t from 'tap';
import { DEFAULT_RETRY_POLICY } from '../src/upstream/retry.ts';
import { NODE_CREDENTIALS, startHarness } from './helpers/harness.ts';

t.test('latency past the per-attempt timeout: the retry answers inside the SDK\'s 1 s', async (t) => {
  const h = await startHarness(t);
  h.emulator.inject({ kind: 'latency', ms: DEFAULT_RETRY_POLICY.attemptTimeoutMs + 400 });
  const started = performance.now();
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 200);
  t.ok(performance.now() - started < 1000, 'answered within 1 s');
  await new Promise((resolve) => setTimeout(resolve, 600));
  t.equal(h.emulator.callCount, 2, 'the slow first attempt and the retry');
});

t.test('500 then success, 503 then success, 429 then success: retried transparently', async (t) => {
  const h = await startHarness(t);
  for (const [status, type] of [[500, 'InternalServerException'], [503, 'ServiceUnavailableException'], [429, 'ThrottlingException']] as const) {
    const before = h.emulator.callCount;
    h.emulator.inject({ kind: 'error', status, type });
    const reply = await h.send({ authorization: await h.token() });
    t.equal(reply.status, 200, `${type} then 200`);
    t.equal(h.emulator.callCount - before, 2);
  }
  const metrics = await h.agent.metrics.registry.metrics();
  t.match(metrics, /pod_identity_upstream_retries_total\{code="ThrottlingException"\} 1/);
});

t.test('persistent 5xx and throttling end in the EKS Auth status, within the budget', async (t) => {
  const h = await startHarness(t);
  for (const [status, type] of [[500, 'InternalServerException'], [429, 'ThrottlingException'], [503, 'ServiceUnavailableException']] as const) {
    h.emulator.inject({ kind: 'error', status, type, message: 'persistent' }, 100);
    const started = performance.now();
    const reply = await h.send({ authorization: await h.token() });
    t.equal(reply.status, status);
    t.same(reply.json, { Code: type, Message: 'persistent' });
    t.ok(performance.now() - started < DEFAULT_RETRY_POLICY.budgetMs + 300, 'inside the retry budget');
    h.emulator.clearFaults();
  }
});

t.test('connection refused: 503 UpstreamUnavailable, fast', async (t) => {
  const h = await startHarness(t);
  await h.emulator.close();
  const started = performance.now();
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 503);
  t.equal(reply.json?.Code, 'UpstreamUnavailable');
  t.match(reply.json?.Message, /ECONNREFUSED/);
  t.ok(performance.now() - started < DEFAULT_RETRY_POLICY.budgetMs + 300);
});

t.test('connection reset mid-call is retried', async (t) => {
  const h = await startHarness(t);
  h.emulator.inject({ kind: 'reset' });
  t.equal((await h.send({ authorization: await h.token() })).status, 200);
  h.emulator.inject({ kind: 'reset' }, 100);
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 503);
  t.equal(reply.json?.Code, 'UpstreamUnavailable');
});

t.test('invalid answers: malformed JSON, missing fields, already-expired credentials', async (t) => {
  const h = await startHarness(t);
  const cases = [
    [{ kind: 'malformed' }, 'UpstreamInvalidResponse'],
    [{ kind: 'missing-fields' }, 'UpstreamInvalidResponse'],
    [{ kind: 'expired-credentials' }, 'UpstreamCredentialsExpired'],
  ] as const;
  for (const [fault, code] of cases) {
    h.emulator.inject(fault, 100);
    const reply = await h.send({ authorization: await h.token() });
    t.equal(reply.status, 502, fault.kind);
    t.equal(reply.json?.Code, code, fault.kind);
    h.emulator.clearFaults();
  }
  h.emulator.inject({ kind: 'malformed' });
  t.equal((await h.send({ authorization: await h.token() })).status, 200, 'one malformed answer is retried');
  t.equal((await h.send({ authorization: await h.token() })).status, 200, 'the agent still serves afterwards');
});

t.test('a pod that gives up does not cancel the upstream call: its retry is a hit', async (t) => {
  const h = await startHarness(t, { retry: { ...DEFAULT_RETRY_POLICY, attemptTimeoutMs: 2000 } });
  const token = await h.token();
  h.emulator.inject({ kind: 'latency', ms: 400 });
  await new Promise<void>((resolve) => {
    const req = request({ host: '127.0.0.1', port: h.addresses.credentials[0]!.port, path: '/v1/credentials', headers: { host: '127.0.0.1', authorization: token }, agent: false });
    req.on('error', () => resolve());
    req.setTimeout(100, () => {
      req.destroy();
      resolve();
    });
    req.end();
  });
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.equal(h.emulator.callCount, 1);
  t.match(h.emulator.calls[0], { status: 200 });
  const retry = await h.send({ authorization: token });
  t.equal(retry.status, 200);
  t.equal(h.emulator.callCount, 1, 'the retry was answered from the completed call');
  t.match(await h.agent.metrics.registry.getSingleMetricAsString('pod_identity_cache_lookups_total'), /outcome="hit"\} 1(\n|$)/, 'the retry was a hit');
});

t.test('node credentials that cannot be resolved: 503 NodeCredentialsUnavailable, no upstream call', async (t) => {
  const { buildAgent } = await import('../src/agent.ts');
  const { parseServerArgs } = await import('../src/config/index.ts');
  const { createLogger } = await import('../src/observability/logger.ts');
  const { createLogAudit } = await import('./helpers/log-audit.ts');
  const { sendRequest } = await import('./helpers/harness.ts');
  const h = await startHarness(t);
  const audit = createLogAudit();
  const config = parseServerArgs(['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', h.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-port', '0', '--metrics-address', '127.0.0.1'], {}).config!;
  const agent = buildAgent(config, {
    logger: createLogger({ level: 'info', destination: audit.sink }),
    kubernetes: null,
    credentialProvider: async () => {
      if (lost) throw new Error('no instance profile');
      return NODE_CREDENTIALS;
    },
  });
  // They resolve at start (nothing is bound for pods before they do), and are lost afterwards.
  let lost = false;
  const addresses = await agent.listen();
  lost = true;
  t.teardown(() => agent.close());
  const reply = await sendRequest(addresses.credentials[0]!.port, { authorization: await h.token() });
  t.equal(reply.status, 503);
  t.equal(reply.json?.Code, 'NodeCredentialsUnavailable');
  t.equal(h.emulator.callCount, 0);
});

t.test('background renewal during an outage: one attempt, cached credentials keep being served', async (t) => {
  const h = await startHarness(t, { args: ['--max-credential-retention-before-renewal', '1s', '--max-service-qps', '10'] });
  const token = await h.token();
  const first = await h.send({ authorization: token });
  t.equal(first.status, 200);
  h.emulator.inject({ kind: 'error', status: 503, type: 'ServiceUnavailableException' }, 100);
  await new Promise((resolve) => setTimeout(resolve, 2500));
  t.equal(h.emulator.callCount, 2, 'the renewal made a single attempt and backed off');
  const during = await h.send({ authorization: token });
  t.equal(during.status, 200);
  t.equal(during.json?.AccessKeyId, first.json?.AccessKeyId, 'the cached credentials');
  t.match(await h.agent.metrics.registry.metrics(), /pod_identity_cache_renewals_total\{outcome="failed"\} 1/);
  h.emulator.clearFaults();
});
