import { request } from 'node:http';
import t from 'tap';
import { CredentialCache } from '../src/cache/credential-cache.ts';
import { AgentError, agentError } from '../src/errors.ts';
import { cacheMetrics } from '../src/observability/instrumentation.ts';
import { createLogger } from '../src/observability/logger.ts';
import { createMetrics } from '../src/observability/metrics.ts';
import { NodeCredentialsStatus } from '../src/upstream/node-credentials.ts';
import { parseAssumeRoleResponse } from '../src/upstream/eks-auth-protocol.ts';
import type { ExchangeResult } from '../src/upstream/types.ts';
import { startHarness } from './helpers/harness.ts';
import { createLogAudit } from './helpers/log-audit.ts';

// What an operator reads: a line per background renewal outcome (quiet when routine), and the
// upstream refusing the node's own credentials said once, with /readyz not ready meanwhile.

const HOUR = 3_600_000;
const tick = () => new Promise((resolve) => setImmediate(resolve));

t.test('background renewals: a success at debug, a failure at warn with its code, the success after failures at info, a verdict at info', async (t) => {
  const audit = createLogAudit();
  const metrics = createMetrics({ defaultMetrics: false });
  const clock = { now: 0 };
  const answers: ((value: ExchangeResult | AgentError) => void)[] = [];
  let serial = 0;
  const credentials = () => ({ credentials: { accessKeyId: `ASIA${++serial}`, secretAccessKey: 's', sessionToken: 't', accountId: '111122223333', expiresAt: clock.now + 6 * HOUR }, requestId: `r${serial}` });
  const cache = new CredentialCache({
    exchange: { name: 'scripted', exchange: () => new Promise((resolve, reject) => answers.push((value) => (value instanceof AgentError ? reject(value) : resolve(value)))) },
    maxSize: 10,
    retentionMs: 3 * HOUR,
    renewalsPerSecond: 100,
    now: () => clock.now,
    random: () => 0,
    observer: cacheMetrics(metrics, createLogger({ level: 'debug', destination: audit.sink })),
  });
  const identity = { namespace: 'default', serviceAccount: 'app', podName: 'app-1', podUid: 'uid-1' };
  const request = { key: 'k', token: 'raw', tokenExpiresAt: 10 * 24 * HOUR, identity };
  const renewal = async (answer: ExchangeResult | AgentError) => {
    // A hit first: the pod still holds the credentials, so they are worth renewing.
    t.equal((await cache.get(request)).outcome, 'hit');
    t.equal(cache.sweep(), 1, 'a renewal starts');
    answers.shift()?.(answer);
    await tick();
    await tick();
  };
  const lookup = cache.get(request);
  await tick();
  answers.shift()?.(credentials());
  t.ok((await lookup).ok);
  const renewalLines = () => audit.lines.filter((line) => /renew/.test(String(line.msg)));

  clock.now = 3 * HOUR;
  await renewal(credentials());
  t.match(renewalLines(), [{ level: 'debug', msg: 'credentials renewed in the background', namespace: 'default', serviceAccount: 'app', pod: 'app-1', outcome: 'renewed' }], 'routine: debug, quiet at the default info');
  t.notOk('failuresBefore' in (renewalLines()[0] ?? {}));

  clock.now = 6 * HOUR;
  await renewal(agentError('UpstreamUnavailable', 'EKS Auth could not be reached (ECONNREFUSED)'));
  clock.now += 20_000;
  await renewal(new AgentError('ThrottlingException', 429, 'Rate exceeded', { retryable: true, upstreamRequestId: 'req-9' }));
  t.match(renewalLines().slice(1), [
    { level: 'warn', outcome: 'failed', pod: 'app-1', code: 'UpstreamUnavailable', message: /ECONNREFUSED/, retryInMs: 5000, cachedExpire: /^\d{4}-/ },
    { level: 'warn', outcome: 'failed', code: 'ThrottlingException', upstreamRequestId: 'req-9', failuresBefore: 1, retryInMs: 10_000 },
  ], 'each failure at warn, with the reason and when it is tried again');

  clock.now += 20_000;
  await renewal(credentials());
  t.match(renewalLines()[3], { level: 'info', outcome: 'renewed', failuresBefore: 2, msg: /again, after 2 failed tries/ }, 'back: info, once');

  clock.now += 3 * HOUR + 60_000;
  await renewal(new AgentError('ResourceNotFoundException', 404, 'no association', { retryable: false }));
  t.match(renewalLines()[4], { level: 'info', outcome: 'dropped', code: 'ResourceNotFoundException' });
  t.equal(renewalLines().length, 5, 'one line per renewal, no more');
  t.match(await metrics.registry.getSingleMetricAsString('pod_identity_cache_renewals_total'), /outcome="renewed"\} 2[\s\S]*outcome="failed"\} 2[\s\S]*outcome="dropped"\} 1/, 'the counter is the one it was');
  audit.assertClean();
});

async function readyz(port: number): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/readyz', agent: false }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    })
      .on('error', reject)
      .end();
  });
}

t.test('EKS Auth refusing the node\'s credentials: /readyz 503 with the reason, one line for N requests, then ready again, one line', async (t) => {
  const h = await startHarness(t);
  const probe = h.addresses.probe.port;
  t.equal((await readyz(probe)).status, 200, 'ready before');
  const refusals = 4;
  h.emulator.inject({ kind: 'error', status: 403, type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' }, refusals);
  const token = await h.token();
  for (let i = 0; i < refusals; i += 1) {
    const reply = await h.send({ authorization: token });
    t.match(reply, { status: 403, json: { Code: 'UnrecognizedClientException' } }, `request ${i + 1} gets its error answer`);
  }
  t.equal(h.emulator.callCount, refusals, 'not retried at once: one call each');
  const refused = h.audit.lines.filter((line) => /refuses the node's credentials/.test(String(line.msg)));
  t.match(refused, [{ level: 'error', code: 'UnrecognizedClientException' }], 'said once, at error');
  const perRequest = h.audit.lines.filter((line) => line.msg === 'credential request failed: the upstream refuses the node\'s credentials');
  t.equal(perRequest.length, refusals, 'each request has its line…');
  t.ok(perRequest.every((line) => line.level === 'debug' && line.client === '127.0.0.1'), '…at debug');
  t.notOk(h.audit.lines.some((line) => line.msg === 'credential request' && line.code === 'UnrecognizedClientException'), 'none at info');

  const down = await readyz(probe);
  t.equal(down.status, 503);
  const gauge = async () => /^pod_identity_node_credentials_refused (\d)$/m.exec(await h.agent.metrics.registry.metrics())?.[1];
  t.equal(await gauge(), '1', 'pod_identity_node_credentials_refused 1 meanwhile');
  t.match(down.body, { ready: false, checks: { nodeCredentials: { ok: false, error: /^EKS Auth refuses the node's credentials \(UnrecognizedClientException\): The security token/ } } });

  t.equal((await h.send({ authorization: token })).status, 200, 'the next call succeeds (nothing was remembered against the token)');
  t.equal((await readyz(probe)).status, 200, 'ready again');
  t.equal(await gauge(), '0', 'and 0 again');
  const back = h.audit.lines.filter((line) => /refusal of the node's credentials is over/.test(String(line.msg)));
  t.match(back, [{ level: 'info', msg: /a call to EKS Auth with them succeeded/ }], 'said once');
  t.equal(h.audit.lines.filter((line) => /refuses the node's credentials:/.test(String(line.msg))).length, 1, 'still one refusal line');
});

t.test('a refusal ends when the chain hands out other keys, not the same ones again', async (t) => {
  const audit = createLogAudit();
  const status = new NodeCredentialsStatus(createLogger({ level: 'debug', destination: audit.sink }));
  const keys = (accessKeyId: string) => ({ accessKeyId, secretAccessKey: 'secret' });
  status.resolved(keys('ASIAOLD'));
  status.observer.nodeCredentialsRejected?.(new AgentError('ExpiredTokenException', 403, 'The security token included in the request is expired', { nodeCredentialsRejected: true }), 'EKS Auth');
  status.observer.nodeCredentialsRejected?.(new AgentError('ExpiredTokenException', 403, 'again', { nodeCredentialsRejected: true }), 'EKS Auth');
  t.match(status.rejection, /ExpiredTokenException/);
  status.resolved(keys('ASIAOLD'));
  t.match(status.rejection, /ExpiredTokenException/, 'the same keys: still refused');
  status.resolved(keys('ASIANEW'));
  t.equal(status.rejection, undefined, 'other keys: ready');
  t.match(audit.lines.map((line) => [line.level, line.msg]), [['error', /refuses the node's credentials/], ['info', /over \(the node's credentials were refreshed\)/]]);
  t.notOk(JSON.stringify(audit.lines).includes('ASIA'), 'key ids are compared, not logged');
});

t.test('which EKS Auth errors are about the node\'s credentials, not the pod\'s token', async (t) => {
  const refusal = (status: number, type: string, message: string): AgentError => {
    try {
      parseAssumeRoleResponse({ status, headers: { 'x-amzn-errortype': type }, body: JSON.stringify({ message }) });
    } catch (error) {
      return error as AgentError;
    }
    throw new Error('expected an error');
  };
  const cases: [number, string, string, { nodeCredentialsRejected: boolean; retryable: boolean }][] = [
    [403, 'UnrecognizedClientException', 'The security token included in the request is invalid.', { nodeCredentialsRejected: true, retryable: true }],
    [403, 'InvalidSignatureException', 'The request signature we calculated does not match the signature you provided.', { nodeCredentialsRejected: true, retryable: true }],
    [403, 'ExpiredTokenException', 'The security token included in the request is expired', { nodeCredentialsRejected: true, retryable: true }],
    [400, 'ExpiredTokenException', 'The service account token has expired.', { nodeCredentialsRejected: false, retryable: false }],
    [400, 'AccessDeniedException', 'User: arn:aws:sts::111122223333:assumed-role/node/i-0abc is not authorized to perform: eks-auth:AssumeRoleForPodIdentity on resource: arn:aws:eks:us-west-2:111122223333:cluster/c1', { nodeCredentialsRejected: true, retryable: false }],
    [400, 'AccessDeniedException', 'Access denied.', { nodeCredentialsRejected: false, retryable: false }],
    [400, 'InvalidTokenException', 'The service account token is not valid.', { nodeCredentialsRejected: false, retryable: false }],
    [429, 'ThrottlingException', 'Rate exceeded', { nodeCredentialsRejected: false, retryable: true }],
  ];
  for (const [status, type, message, want] of cases) t.match(refusal(status, type, message), { code: type, status, ...want }, `${status} ${type}: ${message.slice(0, 30)}`);
});
