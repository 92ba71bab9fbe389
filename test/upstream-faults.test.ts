import { request } from 'node:http';
import t from 'tap';
import { DEFAULT_RETRY_POLICY } from '../src/upstream/retry.ts';
import { fakeClock } from './helpers/clock.ts';
import { eventually } from './helpers/eventually.ts';
import { NODE_CREDENTIALS, PATIENT_RETRY, startHarness } from './helpers/harness.ts';
import { refusingPort } from './helpers/local-servers.ts';

t.test('latency past the per-attempt timeout: the slow attempt is cut and retried, inside the SDK\'s 1 s', async (t) => {
  const h = await startHarness(t);
  // Far longer than the test: the first attempt can only end by the agent's own per-attempt cut.
  h.emulator.inject({ kind: 'latency', ms: 10 * 60_000 });
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 200, 'the retry got the credentials');
  const retries = h.audit.lines.filter((line) => line.msg === 'retrying EKS Auth call');
  t.match(retries[0], { code: 'UpstreamUnavailable', message: 'EKS Auth did not answer in time' }, 'the slow attempt was cut by its deadline and retried');
  t.ok(h.emulator.calls.length >= 1 && h.emulator.calls.every((call) => call.status === 200), 'what answered was the retry; the slow attempt never finished');
  // Inside the SDK's 1 s by the agent's own numbers, not by how fast this machine ran: the slow
  // attempt is given attemptTimeoutMs, and the retry starts after at most one backoff.
  const { attemptTimeoutMs, backoffBaseMs, backoffCapMs } = DEFAULT_RETRY_POLICY;
  t.ok(attemptTimeoutMs + Math.min(backoffCapMs, backoffBaseMs * 2) < 1000, 'the retry starts before the SDK gives up');
});

t.test('500 then success, 503 then success, 429 then success: retried transparently', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
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

t.test('persistent 5xx and throttling end in the EKS Auth status, after the policy\'s attempts', async (t) => {
  // Attempts are counted here; that no attempt starts or runs past the budget is test/retry.test.ts's,
  // on a fake clock, and test/upstream-outage.test.ts's against an upstream that never answers.
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  for (const [status, type] of [[500, 'InternalServerException'], [429, 'ThrottlingException'], [503, 'ServiceUnavailableException']] as const) {
    h.emulator.inject({ kind: 'error', status, type, message: 'persistent' }, 100);
    const before = h.emulator.callCount;
    const reply = await h.send({ authorization: await h.token() });
    t.equal(reply.status, status);
    t.same(reply.json, { Code: type, Message: 'persistent' });
    t.equal(h.emulator.callCount - before, DEFAULT_RETRY_POLICY.maxAttempts, 'every attempt of the policy, and no more');
    h.emulator.clearFaults();
  }
});

t.test('connection refused: 503 UpstreamUnavailable, each attempt refused rather than timed out', async (t) => {
  const refusing = await refusingPort(t);
  const h = await startHarness(t, { args: ['--endpoint', refusing.url] });
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 503);
  t.equal(reply.json?.Code, 'UpstreamUnavailable');
  t.match(reply.json?.Message, /ECONNREFUSED/);
  // Fast by the agent's own account: every retry was caused by a refusal, none by an attempt's deadline.
  const retries = h.audit.lines.filter((line) => line.msg === 'retrying EKS Auth call');
  t.ok(retries.length >= 1 && retries.length < DEFAULT_RETRY_POLICY.maxAttempts, `${retries.length} retries, within the policy`);
  t.ok(retries.every((line) => /could not be reached \(ECONNREFUSED\)/.test(String(line.message))), 'each attempt ended by the refusal');
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
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const token = await h.token();
  h.emulator.inject({ kind: 'latency', ms: 400 });
  await new Promise<void>((resolve) => {
    const req = request({ host: '127.0.0.1', port: h.addresses.credentials[0]!.port, path: '/v1/credentials', headers: { host: '127.0.0.1', authorization: token }, agent: false });
    req.on('error', () => resolve());
    // Set before the emulator's 400 ms delay begins, so it always fires first: the pod gives up mid-call.
    req.setTimeout(100, () => {
      req.destroy();
      resolve();
    });
    req.end();
  });
  await eventually(() => h.agent.cache.size === 1, 'the abandoned call to complete and be cached');
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

t.test('background renewal during an outage: one attempt, backed off, cached credentials keep being served', async (t) => {
  // The agent's clock is the test's: renewals fall due when the test moves it, not when a timer
  // on a loaded machine gets round to it. The sweep itself still runs every second, for real.
  const clock = fakeClock();
  const h = await startHarness(t, { now: clock.now, args: ['--max-credential-retention-before-renewal', '1s', '--max-service-qps', '10'] });
  const token = await h.token();
  const first = await h.send({ authorization: token });
  t.equal(first.status, 200);
  h.emulator.inject({ kind: 'error', status: 503, type: 'ServiceUnavailableException' }, 100);
  const failedRenewals = async () => Number(/pod_identity_cache_renewals_total\{outcome="failed"\} (\d+)/.exec(await h.agent.metrics.registry.metrics())?.[1] ?? 0);

  clock.advance(1000); // the retention (1 s, less jitter) is up: due
  await eventually(async () => (await failedRenewals()) === 1, 'the renewal to fail');
  t.equal(h.emulator.callCount, 2, 'the renewal made a single attempt');

  // A failed renewal backs off 10 s, less up to half of it in jitter: 4 s on, nothing is due yet.
  clock.advance(4000);
  t.equal(h.agent.cache.sweep(), 0, 'backed off: no renewal due 4 s after the failure');
  t.equal(h.emulator.callCount, 2);
  const during = await h.send({ authorization: token });
  t.equal(during.status, 200);
  t.equal(during.json?.AccessKeyId, first.json?.AccessKeyId, 'the cached credentials');

  clock.advance(6000); // 10 s after the failure: the backoff is over
  await eventually(async () => (await failedRenewals()) === 2, 'the renewal to be tried again');
  t.equal(h.emulator.callCount, 3, 'again a single attempt');
  h.emulator.clearFaults();
});
