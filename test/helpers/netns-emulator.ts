// Runs inside the test's "node" network namespace: an EKS Auth emulator on the namespace's loopback,
// and tokens for the test's pods written to files (the issuer's key lives only in this process).
// Prints one JSON line when ready; exits on SIGTERM.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestCluster } from './harness.ts';

const [dir] = process.argv.slice(2) as [string];
const cluster = await startTestCluster();
const tokens = {
  app: await cluster.issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: 'app-1' }),
  worker: await cluster.issuer.issue({ namespace: 'team-b', serviceAccount: 'worker', podName: 'worker-1' }),
  unassociated: await cluster.issuer.issue({ namespace: 'default', serviceAccount: 'nobody', podName: 'nobody-1' }),
};
for (const [name, token] of Object.entries(tokens)) await writeFile(join(dir, `token-${name}`), token, { mode: 0o600 });
process.on('SIGTERM', () => void cluster.close().then(() => process.exit(0)));
process.stdout.write(`${JSON.stringify({ url: cluster.emulator.url, region: cluster.region, clusterName: cluster.clusterName })}\n`);
