// `npm run soak [-- SECONDS]` (default 300): mixed traffic from several hundred simulated pods against
// the agent as deployed, with an EKS Auth outage in the middle fifth of the run. Reports, every 10 s,
// requests, failures by cause, p50/p99, the agent's RSS, event-loop delay and open handles, and
// compares memory and handles after the run with the start. Not part of the tests.
import { Pool } from 'undici';
import { issueTokens, percentile, report, round, rssBytes, scrape, startAgent, startCluster } from './lib.ts';

const seconds = Number(process.argv[2] ?? 300);
const PODS = 300;
const CONCURRENCY = 32;

const cluster = await startCluster();
const pods = await issueTokens(cluster, PODS);
const fresh = await issueTokens(cluster, 2000);
const unassociated = await cluster.issuer.issue({ namespace: 'bench', serviceAccount: 'nobody', podName: 'nobody' });
// Renewals fall due every 30 s, so that they run, and fail during the outage, throughout the soak.
const agent = await startAgent(cluster, ['--max-credential-retention-before-renewal', '30s', '--max-service-qps', '50']);
const pool = new Pool(new URL(agent.url).origin, { connections: CONCURRENCY });
const pid = agent.child.pid as number;

type Kind = 'hit' | 'cold' | 'rotation' | 'error';
const handles = async () => [...(await scrape(agent.metricsUrl))].filter(([name]) => name.startsWith('nodejs_active_handles{')).reduce((sum, [, n]) => sum + n, 0);
const rows: Record<string, string | number>[] = [];
let window = { requests: 0, failures: {} as Record<string, number>, latencies: [] as number[], faulted: false };
let freshIndex = 0;

function pickRequest(random: number): { kind: Kind; token: string } {
  if (random < 0.85) return { kind: 'hit', token: pods[Math.floor(Math.random() * PODS)] as string };
  if (random < 0.9) return { kind: 'cold', token: fresh[freshIndex++ % fresh.length] as string };
  if (random < 0.95) return { kind: 'rotation', token: fresh[Math.floor(Math.random() * fresh.length)] as string };
  return { kind: 'error', token: Math.random() < 0.5 ? unassociated : 'malformed-token' };
}

async function worker(until: number): Promise<void> {
  while (performance.now() < until) {
    const { kind, token } = pickRequest(Math.random());
    const started = performance.now();
    try {
      const response = await pool.request({ path: '/v1/credentials', method: 'GET', headers: { authorization: token } });
      const body = await response.body.text();
      if (response.statusCode !== 200 && kind !== 'error') {
        const code = (JSON.parse(body) as { Code?: string }).Code ?? String(response.statusCode);
        window.failures[`${kind}:${code}`] = (window.failures[`${kind}:${code}`] ?? 0) + 1;
      }
    } catch (error) {
      window.failures[`${kind}:${(error as { code?: string }).code ?? 'error'}`] = (window.failures[`${kind}:${(error as { code?: string }).code ?? 'error'}`] ?? 0) + 1;
    }
    window.requests += 1;
    window.latencies.push(performance.now() - started);
  }
}

await Promise.all(pods.map((token) => pool.request({ path: '/v1/credentials', method: 'GET', headers: { authorization: token } }).then((r) => r.body.dump())));
const start = { rss: rssBytes(pid), handles: await handles() };
const begin = performance.now();
const end = begin + seconds * 1000;
const faultFrom = begin + seconds * 400;
const faultTo = begin + seconds * 600;
let faulted = false;
// The outage switches on and off on its own timer; each 10 s row says whether it overlapped.
const faultTimer = setInterval(() => {
  const now = performance.now();
  if (!faulted && now >= faultFrom && now < faultTo) {
    cluster.emulator.inject({ kind: 'error', status: 503, type: 'ServiceUnavailableException', message: 'soak outage' }, 1_000_000);
    faulted = true;
  } else if (faulted && now >= faultTo) {
    cluster.emulator.clearFaults();
    faulted = false;
  }
  if (faulted) window.faulted = true;
}, 250);
async function sample(): Promise<void> {
  const now = performance.now();
  const sorted = window.latencies.sort((a, b) => a - b);
  const metrics = await scrape(agent.metricsUrl);
  rows.push({
    t: Math.round((now - begin) / 1000),
    outage: window.faulted ? 'EKS Auth 503' : '',
    requests: window.requests,
    'p50 ms': round(percentile(sorted, 50)),
    'p99 ms': round(percentile(sorted, 99)),
    failures: Object.entries(window.failures).map(([k, n]) => `${k}=${n}`).join(' ') || '-',
    'RSS MB': round(rssBytes(pid) / 1048576, 1),
    'loop p99 ms': round((metrics.get('nodejs_eventloop_lag_p99_seconds') ?? 0) * 1000, 1),
    handles: [...metrics].filter(([name]) => name.startsWith('nodejs_active_handles{')).reduce((sum, [, n]) => sum + n, 0),
  });
  window = { requests: 0, failures: {}, latencies: [], faulted };
}
const sampler = setInterval(() => void sample(), 10_000);
await Promise.all(Array.from({ length: CONCURRENCY }, () => worker(end)));
clearInterval(sampler);
clearInterval(faultTimer);
if (window.requests > 0) await sample();
await new Promise((resolve) => setTimeout(resolve, 5000));
const after = { rss: rssBytes(pid), handles: await handles() };
const total = rows.reduce((sum, row) => sum + Number(row.requests), 0);
await pool.close();
await agent.stop();
await cluster.close();
report(
  'soak',
  { seconds, pods: PODS, requests: total, upstreamCalls: cluster.emulator.callCount, rssMB: { start: round(start.rss / 1048576, 1), afterRun: round(after.rss / 1048576, 1) }, handles: { start: start.handles, afterRun: after.handles } },
  rows,
);
