import t from 'tap';
import { createLogger } from '../src/observability/logger.ts';
import { createMetrics } from '../src/observability/metrics.ts';
import { type RequestRecord, createRequestLog } from '../src/observability/request-log.ts';
import { eventually } from './helpers/eventually.ts';
import { startHarness } from './helpers/harness.ts';
import { createLogAudit } from './helpers/log-audit.ts';

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
