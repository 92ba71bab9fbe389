import t, { type Test } from 'tap';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { Client, request } from 'undici';
import { createTokenIssuer, type IssueOptions, type TokenIssuer } from './emulator/token-issuer.ts';
import { startEksAuthEmulator, type EksAuthEmulator, type EmulatorOptions } from './emulator/eks-auth-emulator.ts';
import { verifySigV4 } from './emulator/sigv4-verifier.ts';
import { eventually } from './helpers/eventually.ts';
import { requestRead } from './helpers/local-servers.ts';

const REGION = 'eu-west-1';
const CLUSTER = 'c1';
const NODE = { accessKeyId: 'AKIANODEKEY000000001', secretAccessKey: 'node-secret-key-0000000000000000000000000' };
const ROLE_ARN = 'arn:aws:iam::123456789012:role/s3-reader';
const PATH = `/clusters/${CLUSTER}/assume-role-for-pod-identity`;

type Creds = { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
type SendOptions = { creds?: Creds; path?: string; signedBody?: string; unsigned?: boolean; applyChecksum?: boolean; client?: Client };

const issuer = await createTokenIssuer();

async function start(t: Test, overrides: Partial<EmulatorOptions> = {}): Promise<EksAuthEmulator> {
  const emulator = await startEksAuthEmulator({
    nodeCredentials: [NODE],
    region: REGION,
    clusterName: CLUSTER,
    verificationKey: issuer.publicKey,
    issuer: issuer.issuer,
    associations: [{ namespace: 'default', serviceAccount: 's3-sa', roleArn: ROLE_ARN }],
    ...overrides,
  });
  t.teardown(() => emulator.close());
  return emulator;
}

const token = (claims: Partial<IssueOptions> = {}, from: TokenIssuer = issuer) =>
  from.issue({ namespace: 'default', serviceAccount: 's3-sa', podName: 'app-7d9f', ...claims });

/** Signs like the SDK does (SignatureV4, host header) and sends with undici. */
async function send(emulator: EksAuthEmulator, body: string, opts: SendOptions = {}) {
  const url = new URL(emulator.url);
  const path = opts.path ?? PATH;
  const sha256 = Hash.bind(null, 'sha256');
  const signer = new SignatureV4({ credentials: opts.creds ?? NODE, region: REGION, service: 'eks-auth', sha256, applyChecksum: opts.applyChecksum ?? true });
  const base = { host: url.host, 'content-type': 'application/json' };
  const signed = opts.unsigned
    ? { headers: base }
    : await signer.sign({ method: 'POST', protocol: 'http:', hostname: url.hostname, port: emulator.port, path, query: {}, headers: base, body: opts.signedBody ?? body });
  const res = await request(`${emulator.url}${path}`, { method: 'POST', headers: signed.headers, body, dispatcher: opts.client });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

const tokenBody = async (claims: Partial<IssueOptions> = {}, from?: TokenIssuer) => JSON.stringify({ token: await token(claims, from) });

t.test('issued token carries projected service-account claims', async (t) => {
  const jwt = await token({ podUid: 'pod-uid-1', nodeName: 'node-a', expiresInSeconds: 600, issuedAt: 1_700_000_000 });
  t.same(decodeProtectedHeader(jwt), { alg: 'RS256', kid: issuer.kid, typ: 'JWT' });
  const claims = decodeJwt(jwt);
  t.equal(claims.iss, 'https://oidc.eks.local/id/EMULATOR');
  t.equal(claims.sub, 'system:serviceaccount:default:s3-sa');
  t.same(claims.aud, ['pods.eks.amazonaws.com']);
  t.same([claims.iat, claims.nbf, claims.exp], [1_700_000_000, 1_700_000_000, 1_700_000_600]);
  t.match(claims.jti, /^[0-9a-f-]{36}$/);
  t.match(claims['kubernetes.io'], {
    namespace: 'default',
    serviceaccount: { name: 's3-sa', uid: /^[0-9a-f-]{36}$/ },
    pod: { name: 'app-7d9f', uid: 'pod-uid-1' },
    node: { name: 'node-a', uid: /^[0-9a-f-]{36}$/ },
  });
  const { keys } = await issuer.jwks();
  t.match(keys, [{ kty: 'RSA', kid: issuer.kid, alg: 'RS256', use: 'sig' }]);
  t.notOk('d' in (keys[0] ?? {}), 'jwks holds no private parts');
});

t.test('a correctly signed request gets the real response shape', async (t) => {
  // The emulator's clock stands still (close to the real one, for SigV4 and the token): the expiry is exact.
  const fixed = Date.now();
  const emulator = await start(t, { now: () => fixed });
  const res = await send(emulator, await tokenBody());
  t.equal(res.status, 200, res.text);
  t.match(res.headers['x-amzn-requestid'], /^[0-9a-f-]{36}$/);
  const body = res.json();
  t.same(Object.keys(body).sort(), ['assumedRoleUser', 'audience', 'credentials', 'podIdentityAssociation', 'subject']);
  t.same(body.subject, { namespace: 'default', serviceAccount: 's3-sa' });
  t.equal(body.audience, 'pods.eks.amazonaws.com');
  t.match(body.podIdentityAssociation, {
    associationArn: new RegExp(`^arn:aws:eks:${REGION}:123456789012:podidentityassociation/${CLUSTER}/a-[a-z0-9]{17}$`),
    associationId: /^a-[a-z0-9]{17}$/,
  });
  const user = body.assumedRoleUser as { arn: string; assumeRoleId: string };
  t.match(user.arn, /^arn:aws:sts::123456789012:assumed-role\/s3-reader\/eks-c1-app-7d9f-/);
  t.equal(user.arn.split(':')[4], '123456789012');
  t.equal(user.assumeRoleId, `${user.assumeRoleId.split(':')[0]}:${user.arn.split('/').at(-1)}`);
  t.match(user.assumeRoleId, /^AROA[A-Z0-9]{17}:/);
  const creds = body.credentials as Record<string, unknown>;
  t.same(Object.keys(creds).sort(), ['accessKeyId', 'expiration', 'secretAccessKey', 'sessionToken']);
  t.match(creds.accessKeyId, /^ASIA[A-Z0-9]{16}$/);
  t.equal((creds.secretAccessKey as string).length, 40);
  t.ok((creds.sessionToken as string).length > 100);
  t.type(creds.expiration, 'number');
  t.equal(creds.expiration, Math.floor(fixed / 1000) + 21_600, 'expiration is epoch seconds, now + 6 h');
  t.match(emulator.calls, [{ path: PATH, status: 200, accessKeyId: NODE.accessKeyId, namespace: 'default', serviceAccount: 's3-sa' }]);
  t.equal(emulator.callCount, 1);
});

t.test('SigV4 failures answer 403 with the matching error type', async (t) => {
  const emulator = await start(t);
  const body = await tokenBody();
  const cases: [string, SendOptions, string][] = [
    ['wrong secret', { creds: { ...NODE, secretAccessKey: 'wrong' } }, 'InvalidSignatureException'],
    ['missing Authorization', { unsigned: true }, 'MissingAuthenticationTokenException'],
    ['unknown key id', { creds: { ...NODE, accessKeyId: 'AKIAUNKNOWN000000000' } }, 'UnrecognizedClientException'],
    ['tampered body, checksum header', { signedBody: JSON.stringify({ token: 'x.y.z' }) }, 'InvalidSignatureException'],
    ['tampered body, no checksum header', { signedBody: JSON.stringify({ token: 'x.y.z' }), applyChecksum: false }, 'InvalidSignatureException'],
  ];
  for (const [name, opts, type] of cases) {
    const res = await send(emulator, body, opts);
    t.equal(res.status, 403, name);
    t.equal(res.headers['x-amzn-errortype'], type, name);
    t.equal(res.headers['content-type'], 'application/json', name);
    t.match(res.json(), { __type: type, message: String }, name);
  }
  t.notOk(JSON.stringify(emulator.calls).includes(JSON.parse(body).token), 'calls never hold the token');
});

t.test('clock skew and session tokens are enforced', async (t) => {
  const skewed = await start(t, { now: () => Date.now() + 10 * 60_000 });
  t.equal((await send(skewed, await tokenBody())).headers['x-amzn-errortype'], 'InvalidSignatureException');
  const session = { ...NODE, sessionToken: 'node-session-token' };
  const emulator = await start(t, { nodeCredentials: [session] });
  t.equal((await send(emulator, await tokenBody(), { creds: session })).status, 200);
  const wrongToken = await send(emulator, await tokenBody(), { creds: { ...session, sessionToken: 'other' } });
  t.equal(wrongToken.headers['x-amzn-errortype'], 'UnrecognizedClientException');
});

t.test('verifySigV4 accepts a query string and rejects an unsigned host', async (t) => {
  const signer = new SignatureV4({ credentials: NODE, region: REGION, service: 'eks-auth', sha256: Hash.bind(null, 'sha256') });
  const body = Buffer.from('{}');
  const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: 'h', path: '/p', query: { b: 'x y', a: ['2', '1'] }, headers: { host: 'h' }, body });
  const options = { credentials: [NODE], region: REGION, service: 'eks-auth' };
  const ok = await verifySigV4({ method: 'POST', path: '/p?b=x%20y&a=2&a=1', headers: signed.headers, body }, options);
  t.same(ok, { ok: true, accessKeyId: NODE.accessKeyId });
  const otherQuery = await verifySigV4({ method: 'POST', path: '/p?b=x%20z&a=2&a=1', headers: signed.headers, body }, options);
  t.match(otherQuery, { ok: false, code: 'InvalidSignatureException' });
  const noHost = await signer.sign({ method: 'POST', protocol: 'http:', hostname: 'h', path: '/p', query: {}, headers: {}, body });
  const verdict = await verifySigV4({ method: 'POST', path: '/p', headers: { ...noHost.headers, host: 'h' }, body }, options);
  t.match(verdict, { ok: false, status: 403, code: 'IncompleteSignatureException' });
  const stripped = (drop: string) => Object.fromEntries(Object.entries(signed.headers).filter(([k]) => k !== drop));
  const noDate = await verifySigV4({ method: 'POST', path: '/p?b=x%20y&a=2&a=1', headers: stripped('x-amz-date'), body }, options);
  t.match(noDate, { ok: false, code: 'IncompleteSignatureException' });
  const garbled = { ...signed.headers, authorization: 'AWS4-HMAC-SHA256 Credential=AKIA' };
  t.match(await verifySigV4({ method: 'POST', path: '/p', headers: garbled, body }, options), { ok: false, code: 'IncompleteSignatureException' });
  const unsignedToken = { ...signed.headers, 'x-amz-security-token': 'tok' };
  t.match(await verifySigV4({ method: 'POST', path: '/p', headers: unsignedToken, body }, options), { ok: false, code: 'IncompleteSignatureException' });
  const wrongRegion = await verifySigV4({ method: 'POST', path: '/p?b=x%20y&a=2&a=1', headers: signed.headers, body }, { ...options, region: 'us-east-1' });
  t.match(wrongRegion, { ok: false, code: 'InvalidSignatureException' });
});

t.test('token, body, cluster and association failures', async (t) => {
  const emulator = await start(t);
  const stranger = await createTokenIssuer();
  const expiredAt = Math.floor(Date.now() / 1000) - 7200;
  const cases: [string, string, string | undefined, number, string][] = [
    ['token from another issuer key', await tokenBody({}, stranger), undefined, 400, 'InvalidTokenException'],
    ['wrong audience', await tokenBody({ audience: 'sts.amazonaws.com' }), undefined, 400, 'InvalidTokenException'],
    ['garbage token', JSON.stringify({ token: 'a.b.c' }), undefined, 400, 'InvalidTokenException'],
    ['expired token', await tokenBody({ issuedAt: expiredAt, expiresInSeconds: 600 }), undefined, 400, 'ExpiredTokenException'],
    ['no association', await tokenBody({ serviceAccount: 'other-sa' }), undefined, 404, 'ResourceNotFoundException'],
    ['body without token', '{"tok":1}', undefined, 400, 'InvalidRequestException'],
    ['non-JSON body', 'token=abc', undefined, 400, 'InvalidRequestException'],
    ['other cluster', await tokenBody(), '/clusters/c2/assume-role-for-pod-identity', 404, 'ResourceNotFoundException'],
    ['unknown route', await tokenBody(), '/clusters/c1/other', 404, 'UnknownOperationException'],
  ];
  for (const [name, body, path, status, type] of cases) {
    const res = await send(emulator, body, path === undefined ? {} : { path });
    t.equal(res.status, status, name);
    t.equal(res.headers['x-amzn-errortype'], type, name);
    t.equal(res.json().__type, type, name);
  }
  const missing = emulator.calls.find((c) => c.serviceAccount === 'other-sa');
  t.match(missing, { status: 404, namespace: 'default' });
  const noAssoc = await send(emulator, await tokenBody({ serviceAccount: 'other-sa' }));
  t.match(noAssoc.json().message, /namespace default service account other-sa/);
});

t.test('fault injection', async (t) => {
  const emulator = await start(t);
  const body = await tokenBody();

  emulator.inject({ kind: 'latency', ms: 300 });
  const started = performance.now();
  t.equal((await send(emulator, body)).status, 200, 'latency then normal answer');
  // A lower bound only: load can lengthen the wait, never shorten the emulator's timer.
  t.ok(performance.now() - started >= 290, 'latency was applied');

  emulator.inject({ kind: 'error', status: 429, type: 'ThrottlingException', message: 'slow down' }, 2);
  for (let i = 0; i < 2; i++) {
    const res = await send(emulator, body, { unsigned: true });
    t.equal(res.status, 429, 'error fault precedes SigV4 verification');
    t.equal(res.headers['x-amzn-errortype'], 'ThrottlingException');
    t.same(res.json(), { __type: 'ThrottlingException', message: 'slow down' });
  }
  t.equal((await send(emulator, body)).status, 200, 'fault consumed after `times` requests');

  emulator.inject({ kind: 'malformed' });
  const malformed = await send(emulator, body);
  t.equal(malformed.status, 200);
  t.throws(() => malformed.json(), 'malformed body is not JSON');

  emulator.inject({ kind: 'expired-credentials' });
  const expired = (await send(emulator, body)).json();
  t.ok((expired.credentials as { expiration: number }).expiration < Date.now() / 1000, 'expiration in the past');
  t.same(expired.subject, { namespace: 'default', serviceAccount: 's3-sa' });

  emulator.inject({ kind: 'missing-fields' });
  const partial = await send(emulator, body);
  t.equal(partial.status, 200);
  t.same(Object.keys(partial.json()).sort(), ['assumedRoleUser', 'audience', 'podIdentityAssociation', 'subject'], 'credentials omitted');

  emulator.inject({ kind: 'reset' });
  await t.rejects(send(emulator, body), 'socket destroyed without an answer');
  t.equal(emulator.calls.at(-1)?.status, 0);

  emulator.inject({ kind: 'error', status: 500, type: 'InternalServerException' }, 5);
  emulator.clearFaults();
  t.equal((await send(emulator, body)).status, 200, 'clearFaults drops queued faults');

  emulator.inject({ kind: 'malformed' });
  t.equal((await request(`${emulator.url}/healthz`)).statusCode, 404, 'other routes do not consume faults');
  t.equal((await send(emulator, body)).text, '<html>not json');
});

t.test('keep-alive connections are reused and close() ends them', async (t) => {
  const emulator = await start(t);
  const client = new Client(emulator.url, { keepAliveTimeout: 10_000 });
  t.teardown(() => client.close());
  let connects = 0;
  client.on('connect', () => connects++);
  const body = await tokenBody();
  for (let i = 0; i < 3; i++) t.equal((await send(emulator, body, { client })).status, 200);
  t.equal(connects, 1, 'one connection served every request');
  const disconnected = new Promise((resolve) => client.once('disconnect', () => resolve('disconnected')));
  await emulator.close();
  await emulator.close();
  // An idle undici socket is unref'd, so a ref'd timer keeps the loop alive until the FIN is seen.
  // The timer only ends a hang: the disconnect comes at once, however loaded the machine.
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([disconnected, new Promise((r) => (timer = setTimeout(r, 30_000, 'still connected')))]);
  clearTimeout(timer);
  t.equal(outcome, 'disconnected', 'close() dropped the idle keep-alive connection and is idempotent');
});

t.test('close() does not wait for a request stuck in a latency fault', async (t) => {
  const logs: string[] = [];
  const emulator = await start(t, { log: (msg) => logs.push(msg) });
  // Longer than the test may run: had close() waited for it, the test would time out.
  emulator.inject({ kind: 'latency', ms: 10 * 60_000 });
  const body = await tokenBody();
  const waiting = requestRead(emulator.port);
  const inFlight = send(emulator, body).then((res) => res.status, () => 'reset');
  await waiting; // the request is in the handler, waiting out its delay
  await emulator.close();
  t.not(await inFlight, 200, 'the delayed request was not answered normally');
  await eventually(() => logs.length > 0, 'the cancelled request to be logged');
  t.match(logs, [/AbortError/], 'the pending delay was cancelled, so no timer outlives close()');
  t.notOk(logs.join('\n').includes(JSON.parse(body).token), 'logs never carry the token');
});
