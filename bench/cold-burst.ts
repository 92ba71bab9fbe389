// Benchmark 2: 1,000 concurrent requests over 100 distinct, uncached tokens, 50 ms upstream latency.
// Baseline: a bare server that answers every request after exactly 50 ms, under the same burst: the
// ideal agent, whose every request costs one upstream round trip and nothing else.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { burst, issueTokens, report, round, scrape, startAgent, startBareServer, startCluster } from './lib.ts';

const REQUESTS = 1000;
const IDENTITIES = 100;
const UPSTREAM_LATENCY_MS = 50;

export async function coldBurst(): Promise<void> {
  const cluster = await startCluster();
  const tokens = await issueTokens(cluster, IDENTITIES);
  const agent = await startAgent(cluster);
  const ideal = await startBareServer(1200, UPSTREAM_LATENCY_MS);
  const file = join(tmpdir(), `pia-burst-${process.pid}.json`);
  // Interleaved, so that each token's requests arrive spread through the burst.
  const load = Array.from({ length: REQUESTS }, (_, i) => tokens[i % IDENTITIES] as string);
  let result: Awaited<ReturnType<typeof burst>>;
  let baseline: Awaited<ReturnType<typeof burst>>;
  let upstreamMeanMs = Number.NaN;
  let misses = Number.NaN;
  let retries = Number.NaN;
  try {
    baseline = await burst(ideal.url, load, file);
    cluster.emulator.inject({ kind: 'latency', ms: UPSTREAM_LATENCY_MS }, 1_000_000);
    result = await burst(agent.url, load, file);
    const samples = await scrape(agent.metricsUrl);
    const sum = samples.get('pod_identity_upstream_request_duration_seconds_sum{code="200"}') ?? Number.NaN;
    const count = samples.get('pod_identity_upstream_request_duration_seconds_count{code="200"}') ?? Number.NaN;
    upstreamMeanMs = (sum / count) * 1000;
    misses = samples.get('pod_identity_cache_lookups_total{outcome="miss"}') ?? 0;
    retries = [...samples].filter(([name]) => name.startsWith('pod_identity_upstream_retries_total')).reduce((total, [, n]) => total + n, 0);
  } finally {
    await Promise.all([agent.stop(), ideal.stop(), cluster.close()]);
  }
  const calls = cluster.emulator.callCount;
  report(
    'cold-burst',
    {
      requests: REQUESTS,
      identities: IDENTITIES,
      upstreamLatencyMs: UPSTREAM_LATENCY_MS,
      upstreamCalls: calls,
      exchanges: misses,
      retriesAfterTimeouts: retries,
      statuses: result.statuses,
      p50Ms: round(result.p50Ms),
      p99Ms: round(result.p99Ms),
      maxMs: round(result.maxMs),
      upstreamMeanAsSeenByAgentMs: round(upstreamMeanMs),
      baselineP99Ms: round(baseline.p99Ms),
      p99OverUpstreamLatency: round(result.p99Ms / UPSTREAM_LATENCY_MS),
      p99OverBaselineP99: round(result.p99Ms / baseline.p99Ms),
      targets: { upstreamCalls: IDENTITIES, p99OverUpstreamLatency: '<= 2' },
    },
    [
      { measure: 'exchanges started (misses)', agent: misses, 'ideal (bare, 50 ms)': '', target: IDENTITIES },
      { measure: 'upstream attempts (with retries)', agent: `${calls} (${retries} retries)`, 'ideal (bare, 50 ms)': '', target: IDENTITIES },
      { measure: 'answered 200', agent: result.statuses['200'] ?? 0, 'ideal (bare, 50 ms)': baseline.statuses['200'] ?? 0, target: REQUESTS },
      { measure: 'p50 ms', agent: round(result.p50Ms), 'ideal (bare, 50 ms)': round(baseline.p50Ms), target: '' },
      { measure: 'p99 ms', agent: round(result.p99Ms), 'ideal (bare, 50 ms)': round(baseline.p99Ms), target: `<= ${2 * UPSTREAM_LATENCY_MS}` },
      { measure: 'upstream call, mean ms', agent: round(upstreamMeanMs), 'ideal (bare, 50 ms)': UPSTREAM_LATENCY_MS, target: '' },
    ],
  );
}
