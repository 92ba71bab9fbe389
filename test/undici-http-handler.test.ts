import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { Agent } from 'undici';
import { timeAttempts } from '../src/upstream/attempt-timing.ts';
import type { AttemptReport } from '../src/upstream/types.ts';
import { UndiciHttpHandler } from '../src/upstream/undici-http-handler.ts';
import { refusingPort } from './helpers/local-servers.ts';

t.test('the SDK\'s request goes out as signed (path, query, headers, body); the answer comes back whole', async (t) => {
  const seen: { url?: string; headers?: Record<string, unknown>; body?: string }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
      if (req.url?.startsWith('/big')) {
        res.end('x'.repeat(70 * 1024));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/xml', 'x-amzn-requestid': 'req-1' }).end('<ok/>');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const dispatcher = new Agent();
  t.teardown(async () => {
    await dispatcher.destroy();
    server.close();
  });
  const reports: AttemptReport[] = [];
  // Attempt timing is the pool's interceptor, as createUpstream composes it.
  const handler = new UndiciHttpHandler(dispatcher.compose(timeAttempts({ attemptEnded: (report) => reports.push(report) })), 'STS');
  const request = { protocol: 'http:', hostname: '127.0.0.1', port, method: 'POST', path: '/', query: { b: 'x y', a: ["it's", '*'], flag: null }, headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'AWS4-HMAC-SHA256 ...' }, body: 'Action=AssumeRole' };
  const { response } = await handler.handle(request);
  t.equal(response.statusCode, 200);
  t.equal(response.headers['x-amzn-requestid'], 'req-1');
  t.equal(Buffer.from(response.body as Uint8Array).toString(), '<ok/>');
  t.equal(seen[0]?.url, '/?a=it%27s&a=%2A&b=x%20y&flag', 'RFC 3986 encoding, sorted, as SigV4 signs it');
  t.equal(seen[0]?.body, 'Action=AssumeRole');
  t.equal(seen[0]?.headers?.authorization, 'AWS4-HMAC-SHA256 ...');
  t.match(reports, [{ status: 200, durationMs: Number }]);

  await t.rejects(handler.handle({ ...request, path: '/big', query: {} }), { code: 'UpstreamInvalidResponse', message: 'STS answered more than 65536 bytes' });
  t.equal(reports.at(-1)?.status, 200, 'the attempt is reported either way');
  const refusing = await refusingPort(t);
  await t.rejects(handler.handle({ ...request, hostname: '127.0.0.1', port: refusing.port }), { code: 'ECONNREFUSED' }, 'a network failure goes to the retry loop as it is');
  t.equal(reports.at(-1)?.status, 0, 'no answer: status 0');
});
