import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startEmulatedCluster } from './emulator/emulated-cluster.ts';

// `npm run emulator [-- --port N --probe-port N --metrics-port N]`: the EKS Auth emulator and a pod's
// token, kept until Ctrl-C, for running the agent by hand. Prints the agent's command line and the
// environment an SDK needs; on SIGINT or SIGTERM it stops the emulator and removes the token file.
// The node keys it prints are the emulator's own, made up for this run: they open nothing else.

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '18080' },
    'probe-port': { type: 'string', default: '18081' },
    'metrics-port': { type: 'string', default: '18082' },
  },
});
const say = (line: string) => process.stdout.write(`${line}\n`);

const NAMESPACE = 'default';
const SERVICE_ACCOUNT = 'demo-app';
const ROLE = 'arn:aws:iam::111122223333:role/demo-app';
const cluster = await startEmulatedCluster({ clusterName: 'demo', associations: [{ namespace: NAMESPACE, serviceAccount: SERVICE_ACCOUNT, roleArn: ROLE }] });
const dir = await mkdtemp(join(tmpdir(), 'pod-identity-emulator-'));
const tokenFile = join(dir, 'eks-pod-identity-token');
// The issuer's tokens last 24 h, as the EKS webhook projects them: longer than a session by hand.
await writeFile(tokenFile, await cluster.issuer.issue({ namespace: NAMESPACE, serviceAccount: SERVICE_ACCOUNT, podName: 'demo-app-5d8c7' }), { mode: 0o600 });

const { accessKeyId, secretAccessKey } = cluster.nodeCredentials;
const agent = [
  `AWS_ACCESS_KEY_ID=${accessKeyId} AWS_SECRET_ACCESS_KEY=${secretAccessKey} AWS_REGION=${cluster.region}`,
  `node_modules/.bin/node dist/cli.js server --cluster-name ${cluster.clusterName} --endpoint ${cluster.emulator.url}`,
  `--bind-hosts 127.0.0.1 --port ${values.port} --probe-port ${values['probe-port']} --metrics-address 127.0.0.1 --metrics-port ${values['metrics-port']}`,
].join(' ');
say(`EKS Auth emulator on ${cluster.emulator.url}: cluster "${cluster.clusterName}", ${NAMESPACE}/${SERVICE_ACCOUNT} -> ${ROLE}`);
say('');
say('Run the agent against it (from the repository, after npm run build):');
say(`  ${agent}`);
say('');
say(`Then, for an AWS SDK, the environment EKS gives a pod of ${NAMESPACE}/${SERVICE_ACCOUNT}:`);
say(`  export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:${values.port}/v1/credentials`);
say(`  export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=${tokenFile}`);
say('  curl -s -H "Authorization: $(cat $AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)" $AWS_CONTAINER_CREDENTIALS_FULL_URI');
say('(any AWS SDK reads these two; the credentials are the emulator\'s, good for nothing else)');
say('');
say('Ctrl-C stops the emulator and removes the token file.');

const signal = await new Promise<NodeJS.Signals>((resolve) => {
  process.once('SIGINT', resolve);
  process.once('SIGTERM', resolve);
});
await cluster.close();
await rm(dir, { recursive: true, force: true });
say(`stopped (${signal}); ${cluster.emulator.callCount} EKS Auth calls answered; ${dir} removed`);
