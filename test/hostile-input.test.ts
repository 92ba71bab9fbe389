import { Agent, request } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { rawExchange } from './helpers/raw-http.ts';
import { PATIENT_RETRY, startHarness } from './helpers/harness.ts';

function b64(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

const get = (path: string, headers: string[]) => `GET ${path} HTTP/1.1\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;

t.test('malformed requests: each a defined status with a JSON error, no upstream call, no crash', async (t) => {
  const h = await startHarness(t);
  const port = h.addresses.credentials[0]!.port;
  const host = `Host: 127.0.0.1:${port}`;
  const token = await h.token();
  const [header, payload] = token.split('.') as [string, string];
  const now = Math.floor(Date.now() / 1000);
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
  const cases: [string, string | Buffer, number, string][] = [
    ['DELETE', `DELETE /v1/credentials HTTP/1.1\r\n${host}\r\nAuthorization: ${token}\r\n\r\n`, 405, 'MethodNotAllowed'],
    ['HEAD', `HEAD /v1/credentials HTTP/1.1\r\n${host}\r\n\r\n`, 405, ''],
    ['dot segments', get('/v1/credentials/..', [host, `Authorization: ${token}`]), 404, 'NotFound'],
    ['double slash', get('//v1/credentials', [host, `Authorization: ${token}`]), 404, 'NotFound'],
    ['encoded path', get('/v1/%63redentials', [host, `Authorization: ${token}`]), 404, 'NotFound'],
    ['absolute URI', get('http://evil.example/v1/credentials', [host, `Authorization: ${token}`]), 404, 'NotFound'],
    ['no Host', `GET /v1/credentials HTTP/1.0\r\nAuthorization: ${token}\r\n\r\n`, 403, 'ForbiddenHost'],
    ['two Hosts', get('/v1/credentials', [host, 'Host: 169.254.170.23', `Authorization: ${token}`]), 400, ''],
    ['huge Host', get('/v1/credentials', [`Host: ${'a'.repeat(5000)}`, `Authorization: ${token}`]), 403, 'ForbiddenHost'],
    ['two Authorizations', get('/v1/credentials', [host, `Authorization: ${token}`, `Authorization: ${token}`]), 400, 'AmbiguousRequest'],
    ['empty Authorization', get('/v1/credentials', [host, 'Authorization:']), 400, 'MissingToken'],
    ['bad base64', get('/v1/credentials', [host, 'Authorization: a!b.c$d.e%f']), 400, 'MalformedToken'],
    ['payload not JSON', get('/v1/credentials', [host, `Authorization: ${header}.${b64('not json')}.c2ln`]), 400, 'MalformedToken'],
    ['alg none', get('/v1/credentials', [host, `Authorization: ${b64({ alg: 'none' })}.${payload}.`]), 400, 'MalformedToken'],
    ['alg none, signed', get('/v1/credentials', [host, `Authorization: ${b64({ alg: 'none' })}.${payload}.c2ln`]), 400, 'MalformedToken'],
    ['absurd exp', get('/v1/credentials', [host, `Authorization: ${header}.${b64({ ...claims, exp: 1e300 })}.c2ln`]), 400, 'MalformedToken'],
    ['negative exp', get('/v1/credentials', [host, `Authorization: ${header}.${b64({ ...claims, exp: -now })}.c2ln`]), 400, 'MalformedToken'],
    ['1 MB header', get('/v1/credentials', [host, `X-Junk: ${'x'.repeat(1024 * 1024)}`]), 431, 'HeadersTooLarge'],
    ['not HTTP', 'HELLO THERE\r\n\r\n', 400, 'BadRequest'],
    ['binary garbage', Buffer.from([0, 1, 2, 3, 255, 254, 13, 10, 13, 10]), 400, 'BadRequest'],
    ['HTTP/1.0 with a query', `GET /v1/credentials?x=1 HTTP/1.0\r\n${host}\r\nAuthorization: garbage\r\n\r\n`, 400, 'MalformedToken'],
  ];
  for (const [name, bytes, status, code] of cases) {
    const reply = await rawExchange(port, [bytes]);
    t.equal(reply.status, status, `${name}: status`);
    if (code !== '') {
      t.match(reply.headers, /content-type: application\/json/i, `${name}: JSON`);
      t.equal((JSON.parse(reply.body || '{}') as { Code?: string }).Code, code, `${name}: Code`);
    }
  }
  t.equal(h.emulator.callCount, 0, 'no upstream call');
  t.equal((await h.send({ authorization: token })).status, 200, 'still serving');
});

t.test('connection-level abuse: pipelining, half-close, slow headers, idle keep-alive', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const port = h.addresses.credentials[0]!.port;
  const host = `Host: 127.0.0.1:${port}`;
  const token = await h.token();

  const pipelined = await rawExchange(port, [get('/v1/credentials', [host, `Authorization: ${token}`]).repeat(3)], { responses: 3 });
  t.equal(pipelined.raw.match(/HTTP\/1\.1 200 OK/g)?.length, 3, 'three pipelined requests, three answers in order');
  t.equal(h.emulator.callCount, 1, 'one upstream call for them');

  const halfClosed = await rawExchange(port, [get('/v1/credentials', [host, `Authorization: ${token}`])], { endAfterWrite: true });
  t.equal(halfClosed.status, 200, 'a client that half-closes after its request still gets the answer');

  // Real time, on purpose: the server's own headers timeout (5 s, checked each second) must be what
  // cuts it. Its request timeout would only cut at 10 s, so the bound sits between the two, 3.5 s
  // above the latest the headers timeout can act: a margin a loaded 2-core machine meets.
  const started = performance.now();
  const slow = await rawExchange(port, ['GET /v1/credentials HTTP/1.1\r\n', `${host}\r\n`, 'X-Slow: 1\r\n'], { gapMs: 200, untilClosed: true });
  const elapsed = performance.now() - started;
  t.equal(slow.status, 408, 'slowloris: headers not complete in time');
  t.equal(slow.closed, true);
  t.equal((JSON.parse(slow.body || '{}') as { Code?: string }).Code, 'RequestTimeout');
  t.ok(elapsed < 9500, `cut ${Math.round(elapsed)} ms after it began, by the headers timeout rather than the request timeout`);

  // Waits for the server's keep-alive timeout (5 s) to close it, however long a loaded machine takes.
  const idle = await rawExchange(port, [get('/v1/credentials', [host, `Authorization: ${token}`])], { untilClosed: true });
  t.equal(idle.status, 200);
  t.equal(idle.closed, true, 'an idle keep-alive connection is closed by the server');
});

// tap runs tests without --expose-gc; V8 hands out its collector to a new context once the flag is set.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** The heap after full collections, so that only what something still holds is counted. */
function heapHeld(): number {
  for (let i = 0; i < 3; i += 1) collectGarbage();
  return process.memoryUsage().heapUsed;
}

t.test('memory stays flat under a stream of refusals the agent has to remember something about', async (t) => {
  // Warnings only: the test's own log audit would otherwise grow with every refusal's line.
  const h = await startHarness(t, { args: ['-v', 'warn'] });
  const port = h.addresses.credentials[0]!.port;
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  t.teardown(() => agent.destroy());
  const ask = (authorization: string) =>
    new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/v1/credentials', headers: { authorization }, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve(`${res.statusCode} ${(JSON.parse(Buffer.concat(chunks).toString()) as { Code: string }).Code}`));
      });
      req.on('error', reject);
      req.end();
    });
  // Well-formed, distinct and expired: each is parsed, and the parse is remembered (token-checker.ts)
  // before the expiry refuses it, so every one of them lands in a map. The filler makes a leak show.
  const expired = Math.floor(Date.now() / 1000) - 3600;
  const header = b64({ alg: 'RS256', kid: 'k', typ: 'JWT' });
  let serial = 0;
  const tokenNo = () => {
    serial += 1;
    const claims = { aud: ['pods.eks.amazonaws.com'], exp: expired, iat: expired - 3600, jti: `jti-${serial}`, filler: 'f'.repeat(2048), 'kubernetes.io': { namespace: 'default', serviceaccount: { name: 'app' }, pod: { name: `p${serial}`, uid: `u${serial}` } } };
    return `${header}.${b64(claims)}.c2ln`;
  };
  const answers = new Map<string, number>();
  const stream = async (count: number) => {
    for (let sent = 0; sent < count; sent += 200) {
      const batch = await Promise.all(Array.from({ length: 200 }, (_, i) => ask(i % 10 === 0 ? `bad-${serial}.${'x'.repeat(i)}.z` : tokenNo())));
      for (const answer of batch) answers.set(answer, (answers.get(answer) ?? 0) + 1);
    }
  };
  // Past every bound (the parse memo keeps 4096): what is held from here on is the steady state.
  await stream(6000);
  const before = heapHeld();
  await stream(6000);
  const growth = heapHeld() - before;
  t.same([...answers.keys()].sort(), ['400 MalformedToken', '400 TokenExpired'], 'every request refused');
  t.equal([...answers.values()].reduce((a, b) => a + b), 12_000);
  // Held without a bound, 5,400 more refused tokens of 3 KB each would be over 16 MB; the noise is under 100 KB.
  t.ok(growth < 2 * 1024 * 1024, `heap held ${Math.round(growth / 1024)} KiB more after 6,000 more refusals`);
  t.equal(h.emulator.callCount, 0);
});
