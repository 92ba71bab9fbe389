import t from 'tap';
import { createLogger } from '../src/observability/logger.ts';
import { createMetrics } from '../src/observability/metrics.ts';
import { type RequestRecord, createRequestLog } from '../src/observability/request-log.ts';
import { eventually } from './helpers/eventually.ts';
import { startHarness } from './helpers/harness.ts';
import { createLogAudit } from './helpers/log-audit.ts';
import { rawExchange } from './helpers/raw-http.ts';

const served = (lines: readonly Record<string, unknown>[]) => lines.filter((line) => line.msg === 'credentials served from cache');
const requests = (lines: readonly Record<string, unknown>[]) => lines.filter((line) => line.msg === 'credential request');

t.test('by default a hit writes no line of its own: each identity\'s hits are summed into one line', async (t) => {
  const h = await startHarness(t);
  const token = await h.token();
  for (let i = 0; i < 5; i += 1) t.equal((await h.send({ authorization: token })).status, 200);
  t.equal((await h.send({ authorization: await h.token({ serviceAccount: 'nobody' }) })).status, 404);
  t.match(requests(h.audit.lines), [{ status: 200, cache: 'miss', serviceAccount: 'app' }, { status: 404, code: 'ResourceNotFoundException' }], 'the miss and the refusal keep their lines');
  t.equal(requests(h.audit.lines).length, 2, 'the four hits have none');
  t.same(served(h.audit.lines), [], 'nothing summarised before the interval');

  await h.agent.close();
  const [line, ...more] = served(h.audit.lines);
  t.same(more, [], 'one line for the identity');
  t.match(line, { level: 'info', namespace: 'default', serviceAccount: 'app', pod: 'app-7d9f', status: 200, cache: 'hit', hits: 4, first: /^\d{4}-\d\d-\d\dT/, last: /^\d{4}-\d\d-\d\dT/ });
  t.ok(String(line?.first) <= String(line?.last), 'first hit before the last');
  t.match(await h.agent.metrics.registry.getSingleMetricAsString('pod_identity_http_response'), /code="200"\} 5/, 'every hit is still counted');
});

t.test('--log-every-request writes a line for each hit, and nothing is summarised', async (t) => {
  const h = await startHarness(t, { args: ['--log-every-request'] });
  const token = await h.token();
  for (let i = 0; i < 3; i += 1) await h.send({ authorization: token });
  t.match(requests(h.audit.lines), [{ cache: 'miss' }, { cache: 'hit' }, { cache: 'hit' }]);
  await h.agent.close();
  t.same(served(h.audit.lines), []);
});

function record(identity: RequestRecord['identity'], client = '127.0.0.9'): RequestRecord {
  return { started: performance.now(), status: 200, outcome: 'hit', identity, error: undefined, upstreamRequestId: undefined, client };
}

t.test('the summary is written every interval, and flushed early rather than grow past its bound', async (t) => {
  const audit = createLogAudit();
  const log = createRequestLog(createMetrics({ defaultMetrics: false }), createLogger({ level: 'info', destination: audit.sink }), { everyRequest: false, summaryIntervalMs: 50, maxIdentities: 2 });
  t.teardown(() => log.close());
  const pods = ['a', 'b', 'c'].map((name) => ({ namespace: 'default', serviceAccount: 'app', podName: name, podUid: name }));
  log.record(record(pods[0]));
  log.record(record(pods[0]));
  log.record(record(pods[1]));
  t.same(served(audit.lines), [], 'two identities fit');
  log.record(record(pods[2]));
  t.match(served(audit.lines), [{ pod: 'a', hits: 2 }, { pod: 'b', hits: 1 }], 'a third flushes the first two at once');
  await eventually(() => served(audit.lines).length === 3, 'the interval\'s flush');
  t.match(served(audit.lines)[2], { pod: 'c', hits: 1 });
  log.record(record(undefined));
  t.match(requests(audit.lines), [{ cache: 'hit' }], 'a hit without a parsed identity is logged on its own');
});

t.test('every line names the client address: refusals, misses, the 429 and requests refused before any handler; the hit summary its last and how many', async (t) => {
  const h = await startHarness(t, { args: ['--max-client-miss-qps', '1', '--max-client-miss-burst', '1'] });
  const app = await h.token();
  t.equal((await h.send({ authorization: app, host: 'example.com', localAddress: '127.0.0.21' })).status, 403);
  t.equal((await h.send({ authorization: app, localAddress: '127.0.0.22' })).status, 200);
  t.equal((await h.send({ authorization: app, localAddress: '127.0.0.22' })).status, 200, 'a hit');
  t.equal((await h.send({ authorization: app, localAddress: '127.0.0.23' })).status, 200, 'a hit from another address');
  t.equal((await h.send({ authorization: app, localAddress: '127.0.0.23' })).status, 200, 'and another');
  t.equal((await h.send({ authorization: await h.token({ serviceAccount: 'nobody', podName: 'a' }), localAddress: '127.0.0.24' })).status, 404, 'the address\'s one miss');
  t.equal((await h.send({ authorization: await h.token({ serviceAccount: 'nobody', podName: 'b' }), localAddress: '127.0.0.24' })).status, 429, 'its second is refused');
  const raw = await rawExchange(h.addresses.credentials[0]!.port, ['GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nX: \u0001\r\n\r\n'], { untilClosed: true });
  t.equal(raw.status, 400);
  await eventually(() => requests(h.audit.lines).some((line) => line.code === 'BadRequest'), 'the unparsable request\'s line');

  t.match(requests(h.audit.lines), [
    { status: 403, code: 'ForbiddenHost', client: '127.0.0.21' },
    { status: 200, cache: 'miss', client: '127.0.0.22' },
    { status: 404, code: 'ResourceNotFoundException', client: '127.0.0.24' },
    { status: 429, code: 'TooManyRequests', client: '127.0.0.24' },
    { status: 400, code: 'BadRequest', client: '127.0.0.1', cache: 'rejected' },
  ]);
  t.match(await h.agent.metrics.registry.getSingleMetricAsString('pod_identity_http_response'), /code="400"\} 1/, 'the unparsable request is counted too');
  await h.agent.close();
  t.match(served(h.audit.lines), [{ pod: 'app-7d9f', hits: 3, client: '127.0.0.23', clients: 2 }], 'the last address, and two distinct');
});

t.test('the hit summary counts distinct addresses up to a bound, at a comparison per hit', async (t) => {
  const audit = createLogAudit();
  const log = createRequestLog(createMetrics({ defaultMetrics: false }), createLogger({ level: 'info', destination: audit.sink }), { everyRequest: false });
  const pod = { namespace: 'default', serviceAccount: 'app', podName: 'a', podUid: 'a' };
  for (let i = 0; i < 3; i += 1) log.record(record(pod, '127.0.0.9'));
  for (let i = 0; i < 40; i += 1) log.record(record(pod, `127.0.1.${i}`));
  log.close();
  t.match(served(audit.lines), [{ hits: 43, client: '127.0.1.39', clients: 16 }], 'sixteen (or more)');
});
