// Benchmark 3: 500 cached identities, then EKS Auth answers 503 to everything for the whole run.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { burst, issueTokens, report, round, scrape, startAgent, startCluster } from './lib.ts';

const IDENTITIES = 500;
const ROUNDS = 10;

export async function outage(): Promise<void> {
  const cluster = await startCluster();
  const tokens = await issueTokens(cluster, IDENTITIES);
  // Renewal due two seconds after each fetch, so that renewals run, and fail, throughout the outage.
  const agent = await startAgent(cluster, ['--max-credential-retention-before-renewal', '2s', '--max-service-qps', '50']);
  const file = join(tmpdir(), `pia-outage-${process.pid}.json`);
  const statuses: Record<string, number> = {};
  let p99Ms = 0;
  let callsDuringOutage = 0;
  let renewalsFailed = 0;
  try {
    await burst(agent.url, tokens, file);
    const before = cluster.emulator.callCount;
    cluster.emulator.inject({ kind: 'error', status: 503, type: 'ServiceUnavailableException', message: 'benchmark outage' }, 1_000_000);
    for (let i = 0; i < ROUNDS; i += 1) {
      const result = await burst(agent.url, tokens, file);
      for (const [status, count] of Object.entries(result.statuses)) statuses[status] = (statuses[status] ?? 0) + count;
      p99Ms = Math.max(p99Ms, result.p99Ms);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    callsDuringOutage = cluster.emulator.callCount - before;
    renewalsFailed = (await scrape(agent.metricsUrl)).get('pod_identity_cache_renewals_total{outcome="failed"}') ?? 0;
  } finally {
    await Promise.all([agent.stop(), cluster.close()]);
  }
  const total = Object.values(statuses).reduce((sum, n) => sum + n, 0);
  const share = (statuses['200'] ?? 0) / total;
  report(
    'outage',
    { identities: IDENTITIES, requests: total, statuses, answered200: round(share, 4), worstRoundP99Ms: round(p99Ms), upstreamCallsDuringOutage: callsDuringOutage, renewalsFailed, target: { answered200: 1 } },
    [
      { measure: 'requests during outage', value: total },
      { measure: 'answered 200', value: `${round(share * 100, 2)} %` },
      { measure: 'upstream calls (failed renewals)', value: callsDuringOutage },
      { measure: 'worst round p99 ms', value: round(p99Ms) },
    ],
  );
}
