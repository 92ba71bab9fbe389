// Benchmark 1: cache hits against a bare node:http server returning a body of the same size.
// The agent runs twice: as shipped (one info log line per request) and with per-request logging
// off (-v warn), which separates the cost of the request path from the cost of the access log.
import { request } from 'undici';
import { type AgentProcess, autocannon, issueTokens, type LoadResult, report, round, startAgent, startBareServer, startCluster } from './lib.ts';

const ROUNDS = 3;
const SECONDS = 5;
const CONNECTIONS = 50;

function median(results: LoadResult[], pick: (r: LoadResult) => number): number {
  const sorted = results.map(pick).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

interface Contender {
  readonly name: string;
  readonly url: string;
  readonly runs: LoadResult[];
}

export async function hitThroughput(): Promise<void> {
  const cluster = await startCluster();
  const [token] = (await issueTokens(cluster, 1)) as [string];
  const agents: AgentProcess[] = [await startAgent(cluster), await startAgent(cluster, ['-v', 'warn'])];
  const bodies = await Promise.all(agents.map(async (agent) => (await (await request(agent.url, { headers: { authorization: token } })).body.arrayBuffer()).byteLength));
  const bodyBytes = bodies[0] as number;
  const bare = await startBareServer(bodyBytes);
  const contenders: Contender[] = [
    { name: 'bare node:http', url: bare.url, runs: [] },
    { name: 'agent, hit, info log per request', url: (agents[0] as AgentProcess).url, runs: [] },
    { name: 'agent, hit, no per-request log', url: (agents[1] as AgentProcess).url, runs: [] },
  ];
  const headers = { authorization: token };
  try {
    // Warm every JIT, then alternate so that drift on a noisy machine hits all alike.
    for (const contender of contenders) await autocannon(contender.url, { connections: CONNECTIONS, seconds: 2, headers });
    for (let i = 0; i < ROUNDS; i += 1) {
      for (const contender of contenders) contender.runs.push(await autocannon(contender.url, { connections: CONNECTIONS, seconds: SECONDS, headers }));
    }
  } finally {
    await Promise.all([...agents.map((agent) => agent.stop()), bare.stop(), cluster.close()]);
  }
  const summary = contenders.map((c) => ({
    name: c.name,
    requestsPerSecond: round(median(c.runs, (r) => r.requestsPerSecond)),
    p50Ms: median(c.runs, (r) => r.p50Ms),
    p99Ms: median(c.runs, (r) => r.p99Ms),
    failures: c.runs.reduce((sum, r) => sum + r.non2xx + r.errors, 0),
  }));
  const [baseline, shipped, quiet] = summary as [(typeof summary)[0], (typeof summary)[0], (typeof summary)[0]];
  const ratio = (s: typeof baseline) => ({ throughputRatio: round(s.requestsPerSecond / baseline.requestsPerSecond, 3), p99Ratio: round(s.p99Ms / baseline.p99Ms, 3) });
  report(
    'hit-throughput',
    {
      bodyBytes,
      connections: CONNECTIONS,
      rounds: ROUNDS,
      secondsPerRound: SECONDS,
      results: summary,
      shipped: ratio(shipped),
      withoutAccessLog: ratio(quiet),
      targets: { throughputRatio: '>= 0.90', p99Ratio: '<= 1.2' },
      upstreamCalls: cluster.emulator.callCount,
    },
    summary.map((s) => ({ server: s.name, 'req/s': s.requestsPerSecond, 'p50 ms': s.p50Ms, 'p99 ms': s.p99Ms, 'req/s vs bare': ratio(s).throughputRatio, 'p99 vs bare': ratio(s).p99Ratio, failures: s.failures })),
  );
}
