// The EKS Auth emulator in a process of its own, so that its SigV4 and RS256 checks do not share an
// event loop with the benchmark. The token issuer's key stays here: `node bench/emulator-process.ts
// COUNT FILE` writes COUNT tokens (bench/app, pods pod-0...) to FILE as a JSON array, then prints one
// JSON line (url, region, clusterName, node credentials). Commands on stdin, one a line, each answered
// with one JSON line: `latency MS` (every later call waits MS first), `stats` (calls and CPU seconds).
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

const answer = (value: object) => process.stdout.write(`${JSON.stringify(value)}\n`);
createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, argument] = line.trim().split(/\s+/);
  if (command === 'latency') {
    cluster.emulator.clearFaults();
    cluster.emulator.inject({ kind: 'latency', ms: Number(argument) }, Number.MAX_SAFE_INTEGER);
    answer({ latencyMs: Number(argument) });
  } else if (command === 'stats') {
    const { user, system } = process.cpuUsage();
    answer({ calls: cluster.emulator.callCount, ok: cluster.emulator.calls.filter((call) => call.status === 200).length, cpuSeconds: (user + system) / 1e6 });
  } else {
    answer({ error: `unknown command ${command}` });
  }
});
process.on('SIGTERM', () => void cluster.close().then(() => process.exit(0)));
answer({ url: cluster.emulator.url, region: cluster.region, clusterName: cluster.clusterName, nodeCredentials: cluster.nodeCredentials });
