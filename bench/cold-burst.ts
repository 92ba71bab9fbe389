// Benchmark 2: 1,000 concurrent requests over 100 distinct, uncached tokens, 50 ms upstream latency.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { burst, issueTokens, report, round, startAgent, startCluster } from './lib.ts';

const REQUESTS = 1000;
const IDENTITIES = 100;
const UPSTREAM_LATENCY_MS = 50;

export async function coldBurst(): Promise<void> {
  const cluster = await startCluster();
  const tokens = await issueTokens(cluster, IDENTITIES);
  const agent = await startAgent(cluster);
  // Interleaved, so that each token's requests arrive spread through the burst.
  const load = Array.from({ length: REQUESTS }, (_, i) => tokens[i % IDENTITIES] as string);
  let result: Awaited<ReturnType<typeof burst>>;
  try {
    cluster.emulator.inject({ kind: 'latency', ms: UPSTREAM_LATENCY_MS }, 1_000_000);
    result = await burst(agent.url, load, join(tmpdir(), `pia-burst-${process.pid}.json`));
  } finally {
    await Promise.all([agent.stop(), cluster.close()]);
  }
  const calls = cluster.emulator.callCount;
  report(
    'cold-burst',
    {
      requests: REQUESTS,
      identities: IDENTITIES,
      upstreamLatencyMs: UPSTREAM_LATENCY_MS,
      upstreamCalls: calls,
      statuses: result.statuses,
      p50Ms: round(result.p50Ms),
      p99Ms: round(result.p99Ms),
      maxMs: round(result.maxMs),
      p99OverUpstreamLatency: round(result.p99Ms / UPSTREAM_LATENCY_MS),
      targets: { upstreamCalls: IDENTITIES, p99OverUpstreamLatency: '<= 2' },
    },
    [
      { measure: 'upstream calls', value: calls, target: IDENTITIES },
      { measure: 'p50 ms', value: round(result.p50Ms), target: '' },
      { measure: 'p99 ms', value: round(result.p99Ms), target: `<= ${2 * UPSTREAM_LATENCY_MS}` },
      { measure: 'answered 200', value: result.statuses['200'] ?? 0, target: REQUESTS },
    ],
  );
}
