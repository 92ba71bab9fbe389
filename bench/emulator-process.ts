// The EKS Auth emulator in a process of its own, so that its SigV4 and RS256 checks do not share an
// event loop with the benchmark. The token issuer's key stays here: `node bench/emulator-process.ts
// COUNT FILE` writes COUNT tokens (bench/app, pods pod-0...) to FILE as a JSON array, then prints one
// JSON line (url, region, clusterName, node credentials). Commands on stdin, one a line, each answered
// with one JSON line: `latency MS` (every later call waits MS first), `stats` (calls, CPU seconds, and
// since the previous `stats` each call's time in this process and the arrivals' span).
// Exits on SIGTERM.
import { writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { startEmulatedCluster } from '../test/emulator/emulated-cluster.ts';

const [count = '0', file = ''] = process.argv.slice(2);
const associations = [{ namespace: 'bench', serviceAccount: 'app', roleArn: 'arn:aws:iam::111122223333:role/bench' }];
const cluster = await startEmulatedCluster({ clusterName: 'bench', associations });
const tokens: string[] = [];
for (let i = 0; i < Number(count); i += 1) tokens.push(await cluster.issuer.issue({ namespace: 'bench', serviceAccount: 'app', podName: `pod-${i}` }));
await writeFile(file, JSON.stringify(tokens), { mode: 0o600 });

// How long each call spent inside this process, arrival to answer (the emulator records a call when
// it answers, with its arrival time): what the agent observes on top of it is the network and itself.
const handled: { at: number; ms: number }[] = [];
const calls = cluster.emulator.calls as unknown as { at: number }[];
const push = calls.push.bind(calls);
calls.push = (...added) => {
  for (const call of added) handled.push({ at: call.at, ms: Date.now() - call.at });
  return push(...added);
};
let reported = 0;

const answer = (value: object) => process.stdout.write(`${JSON.stringify(value)}\n`);
createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, argument] = line.trim().split(/\s+/);
  if (command === 'latency') {
    cluster.emulator.clearFaults();
    cluster.emulator.inject({ kind: 'latency', ms: Number(argument) }, Number.MAX_SAFE_INTEGER);
    answer({ latencyMs: Number(argument) });
  } else if (command === 'stats') {
    const { user, system } = process.cpuUsage();
    const recent = handled.slice(reported);
    reported = handled.length;
    const ms = recent.map((call) => call.ms).sort((a, b) => a - b);
    const at = (p: number) => ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))] ?? 0;
    const arrivals = recent.map((call) => call.at);
    answer({
      calls: cluster.emulator.callCount,
      ok: cluster.emulator.calls.filter((call) => call.status === 200).length,
      cpuSeconds: (user + system) / 1e6,
      // Since the previous `stats`: time in this process per call, and when the first and last arrived (epoch ms).
      handledP50Ms: at(50),
      handledP99Ms: at(99),
      firstArrival: Math.min(...arrivals),
      lastArrival: Math.max(...arrivals),
    });
  } else {
    answer({ error: `unknown command ${command}` });
  }
});
process.on('SIGTERM', () => void cluster.close().then(() => process.exit(0)));
answer({ url: cluster.emulator.url, region: cluster.region, clusterName: cluster.clusterName, nodeCredentials: cluster.nodeCredentials });
