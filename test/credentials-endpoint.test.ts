import t from 'tap';
import { PATIENT_RETRY, startHarness } from './helpers/harness.ts';

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

t.test('a valid token gets credentials in the exact reference shape', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const reply = await h.send({ authorization: await h.token() });
  t.equal(reply.status, 200);
  t.equal(reply.headers['content-type'], 'application/json');
  t.same(Object.keys(reply.json ?? {}), ['AccessKeyId', 'SecretAccessKey', 'Token', 'AccountId', 'Expiration']);
  t.match(reply.json, { AccessKeyId: /^ASIA[A-Z0-9]{16}$/, AccountId: '111122223333', Expiration: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/ });
  t.ok(Date.parse(String(reply.json?.Expiration)) > Date.now() + 5 * 3600_000, 'six-hour credentials');
  t.equal(h.emulator.callCount, 1);
  const again = await h.send({ authorization: await h.token() });
  t.equal(again.status, 200);
  t.equal(h.emulator.callCount, 2, 'a different token is a different identity');
});

t.test('every local refusal: status, Code, JSON, and no upstream call', async (t) => {
  const h = await startHarness(t);
  const token = await h.token();
  const [header, payload] = token.split('.') as [string, string];
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  const cases: [string, Parameters<typeof h.send>[0], number, string][] = [
    ['wrong Host', { authorization: token, host: '169.254.170.2' }, 403, 'ForbiddenHost'],
    ['other path', { authorization: token, path: '/v1/credentials/..' }, 404, 'NotFound'],
    ['double slash', { authorization: token, path: '//v1/credentials' }, 404, 'NotFound'],
    ['POST', { authorization: token, method: 'POST' }, 405, 'MethodNotAllowed'],
    ['no Authorization', {}, 400, 'MissingToken'],
    ['empty Authorization', { authorization: '' }, 400, 'MissingToken'],
    ['16 KiB+ token', { authorization: `${header}.${b64({ ...claims, pad: 'x'.repeat(16_500) })}.c2ln` }, 400, 'TokenTooLarge'],
    ['not a JWT', { authorization: 'not-a-jwt' }, 400, 'MalformedToken'],
    ['wrong audience', { authorization: await h.token({ audience: 'sts.amazonaws.com' }) }, 400, 'InvalidAudience'],
    ['expired', { authorization: await h.token({ issuedAt: now - 7200, expiresInSeconds: 3600 }) }, 400, 'TokenExpired'],
    ['not yet valid', { authorization: await h.token({ notBefore: now + 600 }) }, 400, 'TokenNotYetValid'],
  ];
  for (const [name, options, status, code] of cases) {
    const reply = await h.send(options);
    t.equal(reply.status, status, `${name}: status`);
    t.equal(reply.headers['content-type'], 'application/json', `${name}: JSON`);
    t.equal(reply.json?.Code, code, `${name}: Code`);
    t.type(reply.json?.Message, 'string', `${name}: Message`);
  }
  t.equal(h.emulator.callCount, 0, 'no refusal reached EKS Auth');
  t.equal((await h.send({ authorization: token, method: 'PUT' })).headers.allow, 'GET');
  t.equal((await h.send({ authorization: token, path: '/v1/credentials?x=1' })).status, 200, 'a query string is ignored');
});

t.test('the Host header may carry the port, or not', async (t) => {
  const h = await startHarness(t);
  const token = await h.token();
  t.equal((await h.send({ authorization: token, host: '127.0.0.1' })).status, 200);
  t.equal((await h.send({ authorization: token })).status, 200);
});

t.test('EKS Auth verdicts pass through with their status and name', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const noAssociation = await h.send({ authorization: await h.token({ serviceAccount: 'nobody' }) });
  t.equal(noAssociation.status, 404);
  t.equal(noAssociation.json?.Code, 'ResourceNotFoundException');
  const forged = await h.send({ authorization: `${(await h.token()).slice(0, -4)}AAAA` });
  t.equal(forged.status, 400);
  t.equal(forged.json?.Code, 'InvalidTokenException');
  const cases: [number, string][] = [
    [400, 'AccessDeniedException'],
    [400, 'InvalidParameterException'],
    [404, 'ResourceNotFoundException'],
  ];
  for (const [status, type] of cases) {
    h.emulator.inject({ kind: 'error', status, type, message: `emulated ${type}` });
    const before = h.emulator.callCount;
    const reply = await h.send({ authorization: await h.token() });
    t.equal(reply.status, status, type);
    t.same(reply.json, { Code: type, Message: `emulated ${type}` });
    t.equal(h.emulator.callCount - before, 1, `${type} is not retried`);
  }
});

t.test('the agent signs with the node credentials and EKS Auth accepts them', async (t) => {
  const h = await startHarness(t);
  await h.send({ authorization: await h.token() });
  t.match(h.emulator.calls, [{ status: 200, accessKeyId: 'AKIANODEEXAMPLE00001', namespace: 'default', serviceAccount: 'app' }]);
});

t.test('one log line per request with the pod identity, and no secrets', async (t) => {
  const h = await startHarness(t);
  await h.send({ authorization: await h.token({ podName: 'web-1' }) });
  await h.send({ authorization: 'garbage' });
  const requests = h.audit.lines.filter((line) => line.msg === 'credential request');
  t.match(requests, [
    { level: 'info', namespace: 'default', serviceAccount: 'app', pod: 'web-1', status: 200, cache: 'miss', upstreamRequestId: /.+/ },
    { level: 'info', status: 400, cache: 'rejected', code: 'MalformedToken' },
  ]);
  t.same(h.audit.leaks(), []);
});

t.test('metrics count responses and cache states under the reference names', async (t) => {
  const h = await startHarness(t);
  const token = await h.token();
  await h.send({ authorization: token });
  await h.send({ authorization: token });
  const text = await h.agent.metrics.registry.metrics();
  t.match(text, /pod_identity_http_response\{code="200"\} 2/);
  t.match(text, /pod_identity_cache_state\{state="miss"\} 1/);
  t.match(text, /pod_identity_cache_state\{state="hit"\} 1/);
});
