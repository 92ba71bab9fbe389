// Benchmark 1: cache hits against a bare node:http server returning a body of the same size.
import { request } from 'undici';
import { autocannon, issueTokens, type LoadResult, report, round, startAgent, startBareServer, startCluster } from './lib.ts';

const ROUNDS = 3;
const SECONDS = 5;
const CONNECTIONS = 50;

function median(results: LoadResult[], pick: (r: LoadResult) => number): number {
  const sorted = results.map(pick).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

export async function hitThroughput(): Promise<void> {
  const cluster = await startCluster();
  const [token] = (await issueTokens(cluster, 1)) as [string];
  const agent = await startAgent(cluster);
  const primed = await request(agent.url, { headers: { authorization: token } });
  const bodyBytes = (await primed.body.arrayBuffer()).byteLength;
  const bare = await startBareServer(bodyBytes);
  const headers = { authorization: token };
  const agentRuns: LoadResult[] = [];
  const bareRuns: LoadResult[] = [];
  try {
    // Warm both JITs, then alternate so that drift on a noisy machine hits both alike.
    await autocannon(bare.url, { connections: CONNECTIONS, seconds: 2, headers });
    await autocannon(agent.url, { connections: CONNECTIONS, seconds: 2, headers });
    for (let i = 0; i < ROUNDS; i += 1) {
      bareRuns.push(await autocannon(bare.url, { connections: CONNECTIONS, seconds: SECONDS, headers }));
      agentRuns.push(await autocannon(agent.url, { connections: CONNECTIONS, seconds: SECONDS, headers }));
    }
  } finally {
    await Promise.all([agent.stop(), bare.stop(), cluster.close()]);
  }
  const agentRps = median(agentRuns, (r) => r.requestsPerSecond);
  const bareRps = median(bareRuns, (r) => r.requestsPerSecond);
  const agentP99 = median(agentRuns, (r) => r.p99Ms);
  const bareP99 = median(bareRuns, (r) => r.p99Ms);
  const failures = agentRuns.reduce((sum, r) => sum + r.non2xx + r.errors, 0);
  report(
    'hit-throughput',
    {
      bodyBytes,
      connections: CONNECTIONS,
      agent: { requestsPerSecond: round(agentRps), p50Ms: median(agentRuns, (r) => r.p50Ms), p99Ms: agentP99, failures },
      bare: { requestsPerSecond: round(bareRps), p50Ms: median(bareRuns, (r) => r.p50Ms), p99Ms: bareP99 },
      throughputRatio: round(agentRps / bareRps, 3),
      p99Ratio: round(agentP99 / bareP99, 3),
      targets: { throughputRatio: '>= 0.90', p99Ratio: '<= 1.2' },
      upstreamCalls: cluster.emulator.callCount,
    },
    [
      { server: 'bare node:http', 'req/s': round(bareRps), 'p50 ms': median(bareRuns, (r) => r.p50Ms), 'p99 ms': bareP99 },
      { server: 'agent (cache hit)', 'req/s': round(agentRps), 'p50 ms': median(agentRuns, (r) => r.p50Ms), 'p99 ms': agentP99 },
      { server: 'agent / bare', 'req/s': round(agentRps / bareRps, 3), 'p50 ms': '', 'p99 ms': round(agentP99 / bareP99, 3) },
    ],
  );
}
