// Benchmark 1: cache hits against a bare node:http server returning a body of the same size.
// The agent runs as the image ships it (default verbosity: hits summarised, not a line each; the
// image's NODE_OPTIONS and compile cache), and with -v error, which separates the request path from
// the log. Each figure is read against the bare server measured in the same run: throughput and p99
// from the load generator, and server CPU per request from /proc/PID/stat, which the load
// generator's own share of the two cores does not blur. A fifth contender, the dependency floor
// (bench/dependency-floor.js, bundled as the agent is), serves the same body from a process that
// loaded the agent's runtime dependencies and runs none of its code: what the runtime hosting them
// costs a request, apart from what the agent's own code does.
import type { ChildProcess } from 'node:child_process';
import { request } from 'undici';
import { LISTEN_OPTIONS, SERVER_OPTIONS } from '../src/server/http-server.ts';
import { buildDependencyFloor } from './floor-build.ts';
import { type LoadResult, autocannon, cpuSeconds, hasWrk, issueTokens, report, round, startAgent, startBareServer, startCluster, startScriptServer, wrk } from './lib.ts';

const ROUNDS = 5;
const SECONDS = 5;
const CONNECTIONS = 50;

interface Run extends LoadResult {
  readonly cpuMicrosPerRequest: number;
}

interface Contender {
  readonly name: string;
  readonly url: string;
  readonly child: ChildProcess;
  readonly runs: Run[];
}

function median(runs: readonly Run[], pick: (r: Run) => number): number {
  return middle(runs.map(pick));
}

function middle(values: number[]): number {
  const sorted = values.sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

async function measure(contender: Contender, seconds: number, headers: Record<string, string>, useWrk: boolean): Promise<Run> {
  const pid = contender.child.pid as number;
  const before = cpuSeconds(pid);
  const load = useWrk ? await wrk(contender.url, { connections: CONNECTIONS, seconds, headers }) : await autocannon(contender.url, { connections: CONNECTIONS, seconds, headers });
  return { ...load, cpuMicrosPerRequest: ((cpuSeconds(pid) - before) * 1e6) / load.requests };
}

export async function hitThroughput(): Promise<void> {
  const useWrk = hasWrk();
  const cluster = await startCluster();
  const [token] = (await issueTokens(cluster, 1)) as [string];
  const agents = [await startAgent(cluster), await startAgent(cluster, ['-v', 'error'])];
  const bodies = await Promise.all(agents.map(async (agent) => (await (await request(agent.url, { headers: { authorization: token } })).body.arrayBuffer()).byteLength));
  const bodyBytes = bodies[0] as number;
  const bare = await startBareServer(bodyBytes);
  // The same bare server with the agent's server options (timeouts, header limit, SO_REUSEPORT): what those cost by themselves.
  const bareWithOptions = await startBareServer(bodyBytes, 0, { ...SERVER_OPTIONS, listen: LISTEN_OPTIONS });
  const floorBuild = await buildDependencyFloor();
  const floor = await startScriptServer(floorBuild.script, ['0', String(bodyBytes)], floorBuild.env);
  const contenders: Contender[] = [
    { name: 'bare node:http', url: bare.url, child: bare.child, runs: [] },
    { name: 'bare node:http, the agent\'s server options', url: bareWithOptions.url, child: bareWithOptions.child, runs: [] },
    { name: 'agent, hit, as the image runs it', url: agents[0]!.url, child: agents[0]!.child, runs: [] },
    { name: 'agent, hit, -v error', url: agents[1]!.url, child: agents[1]!.child, runs: [] },
    { name: 'dependency floor: node:http beside the agent\'s dependencies', url: floor.url, child: floor.child, runs: [] },
  ];
  const headers = { authorization: token };
  try {
    // Warm every JIT, then alternate so that drift on a noisy machine hits all alike.
    for (const contender of contenders) await measure(contender, 2, headers, useWrk);
    for (let i = 0; i < ROUNDS; i += 1) {
      for (const contender of contenders) contender.runs.push(await measure(contender, SECONDS, headers, useWrk));
    }
  } finally {
    await Promise.all([...agents.map((agent) => agent.stop()), bare.stop(), bareWithOptions.stop(), floor.stop(), cluster.close()]);
  }
  const summary = contenders.map((c) => ({
    name: c.name,
    requestsPerSecond: round(median(c.runs, (r) => r.requestsPerSecond)),
    p50Ms: round(median(c.runs, (r) => r.p50Ms), 3),
    p99Ms: round(median(c.runs, (r) => r.p99Ms), 3),
    cpuMicrosPerRequest: round(median(c.runs, (r) => r.cpuMicrosPerRequest), 1),
    failures: c.runs.reduce((sum, r) => sum + r.non2xx + r.errors, 0),
  }));
  const [baseline, withOptions, shipped, quiet, dependencyFloor] = summary as [(typeof summary)[0], (typeof summary)[0], (typeof summary)[0], (typeof summary)[0], (typeof summary)[0]];
  const ratio = (s: typeof baseline, against = baseline) => ({
    throughputRatio: round(s.requestsPerSecond / against.requestsPerSecond, 3),
    p99Ratio: round(s.p99Ms / against.p99Ms, 3),
    cpuPerRequestRatio: round(s.cpuMicrosPerRequest / against.cpuMicrosPerRequest, 3),
  });
  // Each round's ratio, then their median: rounds run a few seconds apart, so a slow spell of the
  // machine weighs on both sides of one ratio rather than on one side of the medians' ratio.
  const paired = (c: Contender, against: Contender) => {
    const each = (pick: (r: Run) => number) => round(middle(c.runs.map((run, i) => pick(run) / pick(against.runs[i] as Run))), 3);
    return { throughputRatio: each((r) => r.requestsPerSecond), p99Ratio: each((r) => r.p99Ms), cpuPerRequestRatio: each((r) => r.cpuMicrosPerRequest) };
  };
  const [bareContender, , shippedContender, , floorContender] = contenders as [Contender, Contender, Contender, Contender, Contender];
  report(
    'hit-throughput',
    {
      loadGenerator: useWrk ? 'wrk -t1' : 'autocannon (install Debian\'s wrk for server CPU figures the load generator does not blur)',
      bodyBytes,
      connections: CONNECTIONS,
      rounds: ROUNDS,
      secondsPerRound: SECONDS,
      results: summary,
      serverOptions: ratio(withOptions),
      asShipped: ratio(shipped),
      verbosityError: ratio(quiet),
      asShippedPerRound: paired(shippedContender, bareContender),
      dependencyFloor: ratio(dependencyFloor),
      asShippedAgainstFloor: ratio(shipped, dependencyFloor),
      asShippedAgainstFloorPerRound: paired(shippedContender, floorContender),
      targets: { throughputRatio: '>= 0.90', p99Ratio: '<= 1.2', cpuPerRequestRatio: '<= 1.15' },
      upstreamCalls: cluster.emulator.callCount,
    },
    summary.map((s) => ({ server: s.name, 'req/s': s.requestsPerSecond, 'p99 ms': s.p99Ms, 'CPU µs/req': s.cpuMicrosPerRequest, 'req/s vs bare': ratio(s).throughputRatio, 'p99 vs bare': ratio(s).p99Ratio, 'CPU vs bare': ratio(s).cpuPerRequestRatio, failures: s.failures })),
  );
}
