import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { buildAgent } from '../src/agent.ts';
import { parseServerArgs } from '../src/config/index.ts';
import { createLogger } from '../src/observability/logger.ts';
import { eventually } from './helpers/eventually.ts';
import { type Harness, NODE_CREDENTIALS, sendRequest, startHarness, startTestCluster } from './helpers/harness.ts';
import { createLogAudit } from './helpers/log-audit.ts';

const run = promisify(execFile);
const promtool = await run('promtool', ['--version']).then(
  () => true,
  () => false,
);

// The reference's three counters keep their names (and so lack `_total`) for existing dashboards.
const REFERENCE_COUNTERS = ['pod_identity_http_response', 'pod_identity_cache_state', 'pod_identity_cache_errors'];

function metricsPortOf(h: Harness): number {
  if (h.addresses.metrics === undefined) throw new Error('metrics are disabled');
  return h.addresses.metrics.port;
}

async function scrape(port: number): Promise<string> {
  const reply = await sendRequest(port, { path: '/metrics', host: '127.0.0.1' });
  if (reply.status !== 200) throw new Error(`/metrics answered ${reply.status}`);
  return reply.text;
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

t.test('promtool finds nothing to complain about but the reference names', { skip: promtool ? false : 'promtool is not installed (Debian package prometheus)' }, async (t) => {
  const h = await startHarness(t);
  await h.send({ authorization: await h.token() });
  await h.send({ authorization: 'not-a-token' });
  const text = await scrape(metricsPortOf(h));
  const lint = await new Promise<string>((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], (_error, stdout, stderr) => resolve(`${stdout}${stderr}`));
    child.stdin?.end(text);
  });
  const problems = lint.split('\n').filter((line) => line.trim() !== '');
  const unexpected = problems.filter((line) => !REFERENCE_COUNTERS.some((name) => line.startsWith(`${name} counter metrics should have "_total" suffix`)));
  t.same(unexpected, [], 'no lint beyond the reference counters\' missing _total');
  t.ok(problems.length <= REFERENCE_COUNTERS.length);
});

t.test('the series exist with bounded labels and move as requests happen', async (t) => {
  const h = await startHarness(t);
  const token = await h.token({ podName: 'very-unique-pod-name-123' });
  const before = await scrape(metricsPortOf(h));
  t.equal(sample(before, 'pod_identity_cache_entries'), 0);
  t.match(before, /^pod_identity_build_info\{version="\d+\.\d+\.\d+",nodejs_version="v24\.[\d.]+"\} 1$/m);
  t.match(before, /^pod_identity_node_credentials_expiry_timestamp_seconds 0$/m, 'static node keys: no expiry');
  t.match(before, /^process_resident_memory_bytes \d+/m, 'process metrics');
  t.match(before, /^nodejs_eventloop_lag_seconds /m, 'Node.js metrics');

  await h.send({ authorization: token });
  await h.send({ authorization: token });
  await h.send({ authorization: token, host: 'evil.example' });
  h.emulator.inject({ kind: 'error', status: 503, type: 'ServiceUnavailableException' }, 10);
  await h.send({ authorization: await h.token({ podName: 'p2' }) });
  h.emulator.clearFaults();
  const after = await scrape(metricsPortOf(h));

  t.equal(sample(after, 'pod_identity_http_response{code="200"}'), 2);
  t.equal(sample(after, 'pod_identity_http_response{code="403"}'), 1);
  t.equal(sample(after, 'pod_identity_http_response{code="503"}'), 1);
  t.equal(sample(after, 'pod_identity_cache_state{state="hit"}'), 1);
  t.equal(sample(after, 'pod_identity_cache_state{state="miss"}'), 2);
  t.equal(sample(after, 'pod_identity_cache_errors{type="ServiceUnavailableException",code="503"}'), 1);
  t.equal(sample(after, 'pod_identity_request_duration_seconds_count{outcome="hit"}'), 1);
  t.equal(sample(after, 'pod_identity_request_duration_seconds_count{outcome="miss"}'), 1);
  t.equal(sample(after, 'pod_identity_request_duration_seconds_count{outcome="error"}'), 2);
  // A hit is answered in microseconds: its histogram must resolve below a millisecond.
  const hitBuckets = ['0.00005', '0.0001', '0.00025', '0.0005', '0.001', '+Inf'].map((le) => sample(after, `pod_identity_request_duration_seconds_bucket{le="${le}",outcome="hit"}`));
  t.ok(hitBuckets.every((count) => count !== undefined), 'sub-millisecond buckets exist');
  t.ok(hitBuckets.every((count, i) => i === 0 || (count ?? 0) >= (hitBuckets[i - 1] ?? 0)), 'cumulative');
  t.equal(hitBuckets.at(-1), 1, 'the one hit is counted');
  t.equal(sample(after, 'pod_identity_cache_lookups_total{outcome="hit"}'), 1);
  t.equal(sample(after, 'pod_identity_cache_entries'), 1);
  t.equal(sample(after, 'pod_identity_upstream_inflight_requests'), 0);
  t.ok((sample(after, 'pod_identity_upstream_request_duration_seconds_count{code="503"}') ?? 0) >= 1);
  t.ok((sample(after, 'pod_identity_cache_oldest_credential_age_seconds') ?? -1) >= 0);

  // Hits are tallied and added at scrape time (metrics.ts, HitTally): a second scrape adds only what is new.
  for (let i = 0; i < 5; i += 1) await h.send({ authorization: token });
  const again = await scrape(metricsPortOf(h));
  t.equal(sample(again, 'pod_identity_http_response{code="200"}'), 7, 'five more hits, counted once');
  t.equal(sample(again, 'pod_identity_cache_state{state="hit"}'), 6);
  t.equal(sample(again, 'pod_identity_cache_lookups_total{outcome="hit"}'), 6);
  t.equal(sample(again, 'pod_identity_request_duration_seconds_count{outcome="hit"}'), 6);
  t.equal(sample(await scrape(metricsPortOf(h)), 'pod_identity_http_response{code="200"}'), 7, 'a scrape with no new hit adds nothing');

  const labelValues = [...after.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...(m[1] ?? '').matchAll(/="([^"]*)"/g)].map((v) => v[1] ?? ''));
  t.notOk(labelValues.some((value) => value.includes('very-unique-pod-name') || value.includes('eyJ') || value.includes('evil')), 'no pod name, token or Host in any label');
});

t.test('the Grafana dashboard queries only series the agent exports, in valid PromQL', async (t) => {
  const { readFile, writeFile, mkdtemp, rm } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dashboard = JSON.parse(await readFile(new URL('../daemonset/grafana-dashboard.json', import.meta.url), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  const exprs = dashboard.panels.flatMap((panel) => panel.targets.map((target) => target.expr));
  t.ok(exprs.length >= 10);
  const h = await startHarness(t);
  await h.send({ authorization: await h.token() });
  // Declared families (a labelled counter has no sample until first counted), with a histogram's series.
  const exported = new Set(
    [...(await scrape(metricsPortOf(h))).matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap(([, name, type]) =>
      type === 'histogram' ? [`${name}_bucket`, `${name}_count`, `${name}_sum`] : [name as string],
    ),
  );
  const used = new Set(exprs.flatMap((expr) => expr.match(/\b(?:pod_identity|process|nodejs)_[a-z0-9_]+/g) ?? []));
  t.same([...used].filter((name) => !exported.has(name)), [], 'every series a panel queries is exported');
  for (const wanted of ['pod_identity_request_duration_seconds_bucket', 'pod_identity_cache_lookups_total', 'pod_identity_upstream_request_duration_seconds_count', 'pod_identity_cache_renewals_total', 'pod_identity_cache_errors']) {
    t.ok(used.has(wanted), `a panel shows ${wanted}`);
  }
  if (!promtool) return;
  // promtool checks PromQL in rule files; Grafana's variables become plain values first.
  const dir = await mkdtemp(join(tmpdir(), 'pia-dash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const rules = exprs.map((expr, i) => `      - record: dashboard:panel_${i}\n        expr: ${JSON.stringify(expr.replaceAll('$__rate_interval', '5m').replaceAll('$job', '.*').replaceAll('$instance', '.*'))}`);
  await writeFile(join(dir, 'rules.yml'), `groups:\n  - name: dashboard\n    rules:\n${rules.join('\n')}\n`);
  const { stdout } = await run('promtool', ['check', 'rules', join(dir, 'rules.yml')]);
  t.match(stdout, `SUCCESS: ${exprs.length} rules found`);
});

t.test('--no-metrics: no metrics listener', async (t) => {
  const h = await startHarness(t, { args: ['--no-metrics'] });
  t.equal(h.addresses.metrics, undefined);
  t.equal((await h.send({ authorization: await h.token() })).status, 200, 'credentials are served all the same');
});

t.test('a background renewal is counted, and the next request is a hit on its credentials', async (t) => {
  const cluster = await startTestCluster();
  // The agent's clock, moved past the renewal point; the sweep's timer is real, the renewal due at once.
  let offset = 0;
  const config = parseServerArgs(['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', cluster.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', '-v', 'warn'], {}).config!;
  const audit = createLogAudit();
  const agent = buildAgent(config, { logger: createLogger({ level: 'warn', destination: audit.sink }), kubernetes: null, credentialProvider: async () => NODE_CREDENTIALS, now: () => Date.now() + offset });
  const addresses = await agent.listen();
  t.teardown(async () => {
    await agent.close();
    await cluster.emulator.close();
    audit.assertClean();
  });
  const port = addresses.credentials[0]!.port;
  const authorization = await cluster.issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: 'web' });
  audit.secrets.add(authorization);
  const first = await sendRequest(port, { authorization }, audit);
  t.equal(first.status, 200);
  // 6-hour credentials are renewed at the 3-hour retention (less up to a tenth of jitter).
  offset = 3 * 3_600_000 + 60_000;
  const renewed = async () => sample(await scrape(addresses.metrics!.port), 'pod_identity_cache_renewals_total{outcome="renewed"}') === 1;
  await eventually(renewed, 'the sweep to renew the credentials', 10_000);
  t.equal(cluster.emulator.callCount, 2, 'the miss and the renewal');
  const next = await sendRequest(port, { authorization }, audit);
  t.equal(next.status, 200);
  t.not(next.json?.AccessKeyId, first.json?.AccessKeyId, 'the renewed credentials');
  t.equal(cluster.emulator.callCount, 2, 'no call of its own');
  t.equal(sample(await scrape(addresses.metrics!.port), 'pod_identity_cache_lookups_total{outcome="hit"}'), 1);
});
