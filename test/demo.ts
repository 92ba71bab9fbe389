import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromHttp } from '@aws-sdk/credential-providers';
import { buildAgent } from '../src/agent.ts';
import { parseServerArgs } from '../src/config/index.ts';
import { startEmulatedCluster } from './emulator/emulated-cluster.ts';
import { createLogger } from '../src/observability/logger.ts';

const say = (line: string) => process.stdout.write(`${line}\n`);

/**
 * The whole flow on loopback: an EKS Auth emulator, the agent in front of it, and the real AWS SDK
 * for JavaScript fetching credentials the way a pod does. Prints what happened, never a secret.
 */
async function runDemo(): Promise<number> {
  const { issuer, emulator, nodeCredentials } = await startEmulatedCluster({
    clusterName: 'demo',
    associations: [{ namespace: 'default', serviceAccount: 'demo-app', roleArn: 'arn:aws:iam::111122223333:role/demo-app' }],
  });
  const { config } = parseServerArgs(
    ['--cluster-name', 'demo', '--region', 'us-west-2', '--endpoint', emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', '-v', 'warn'],
    {},
  );
  const agent = buildAgent(config!, { logger: createLogger({ level: 'warn' }), credentialProvider: async () => nodeCredentials, kubernetes: null });
  const dir = await mkdtemp(join(tmpdir(), 'pod-identity-demo-'));
  try {
    const addresses = await agent.listen();
    const url = `http://127.0.0.1:${addresses.credentials[0]?.port}/v1/credentials`;
    say(`EKS Auth emulator  ${emulator.url} (cluster "demo", default/demo-app -> role demo-app)`);
    say(`agent              ${url}`);

    const tokenFile = join(dir, 'eks-pod-identity-token');
    await writeFile(tokenFile, await issuer.issue({ namespace: 'default', serviceAccount: 'demo-app', podName: 'demo-app-5d8c7' }), { mode: 0o600 });
    process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = url;
    process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = tokenFile;
    say(`pod environment    AWS_CONTAINER_CREDENTIALS_FULL_URI=${url}`);
    say(`                   AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=${tokenFile}`);

    const provider = fromHttp();
    for (const attempt of ['first fetch (cache miss)', 'second fetch (cache hit)']) {
      const started = performance.now();
      const credentials = await provider();
      const ms = (performance.now() - started).toFixed(1);
      say(`AWS SDK ${attempt}: ${credentials.accessKeyId}, expires ${credentials.expiration?.toISOString()}, ${ms} ms`);
    }
    const raw = (await (await fetch(url, { headers: { authorization: await readFile(tokenFile, 'utf8') } })).json()) as Record<string, unknown>;
    say(`agent response     fields ${Object.keys(raw).join(', ')}; AccountId ${String(raw.AccountId)} (secret and session token not shown)`);
    say(`EKS Auth calls     ${emulator.callCount} for 3 requests`);
    return 0;
  } finally {
    delete process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI;
    delete process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE;
    await agent.close();
    await emulator.close();
    await rm(dir, { recursive: true, force: true });
  }
}

// `npm run demo`: the emulators are test code, so the demo runs from here, never from the image.
process.exitCode = await runDemo();
