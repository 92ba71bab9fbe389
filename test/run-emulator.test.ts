import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { access } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { fromHttp } from '@aws-sdk/credential-providers';
import t from 'tap';
import { BASE_ENV, START_LIMIT_MS } from './helpers/cli-process.ts';
import { eventually } from './helpers/eventually.ts';

// `npm run emulator` as a person uses it: start it, run the agent with the command line it prints,
// fetch credentials with the AWS SDK from the environment it prints, stop both, nothing left behind.

const ROOT = new URL('..', import.meta.url).pathname;

/** Ports free a moment ago, for the agent's command line (the emulator's printed defaults are fixed). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, async () => {
    const server = createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    return server;
  }));
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

function collect(child: ChildProcess): () => string {
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return () => output;
}

t.test('npm run emulator: the printed command line and environment get credentials through the agent; Ctrl-C cleans up', async (t) => {
  const [port, probePort, metricsPort] = await freePorts(3);
  const emulator = spawn(process.execPath, ['test/run-emulator.ts', '--port', String(port), '--probe-port', String(probePort), '--metrics-port', String(metricsPort)], { cwd: ROOT, env: BASE_ENV });
  const emulatorOutput = collect(emulator);
  const emulatorExit = once(emulator, 'exit');
  t.teardown(() => void emulator.kill('SIGKILL'));
  await eventually(() => emulatorOutput().includes('Ctrl-C'), 'the emulator to print its instructions', START_LIMIT_MS);

  const lines = emulatorOutput().split('\n').map((line) => line.trim());
  const command = lines[lines.findIndex((line) => line.startsWith('Run the agent')) + 1] ?? '';
  t.match(command, /^AWS_ACCESS_KEY_ID=\S+ AWS_SECRET_ACCESS_KEY=\S+ AWS_REGION=us-west-2 node_modules\/\.bin\/node dist\/cli\.js server --cluster-name demo --endpoint http:\/\/127\.0\.0\.1:\d+ /);
  const exported = Object.fromEntries(lines.filter((line) => line.startsWith('export ')).map((line) => line.slice('export '.length).split('=', 2) as [string, string]));
  t.equal(exported.AWS_CONTAINER_CREDENTIALS_FULL_URI, `http://127.0.0.1:${port}/v1/credentials`);
  const tokenFile = exported.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE ?? '';
  await access(tokenFile);

  // As printed, through a shell, from the repository (dist/ is built by npm test's pretest).
  // bash runs a lone command in its own process (no fork), so the signal below reaches the agent.
  const agent = spawn('bash', ['-c', command], { cwd: ROOT, env: BASE_ENV });
  const agentOutput = collect(agent);
  const agentExit = once(agent, 'exit');
  t.teardown(() => void agent.kill('SIGKILL'));
  await eventually(() => agentOutput().includes('"probes and metrics listening"'), 'the agent to start', START_LIMIT_MS);

  const credentials = await fromHttp({ awsContainerCredentialsFullUri: exported.AWS_CONTAINER_CREDENTIALS_FULL_URI, awsContainerAuthorizationTokenFile: tokenFile })();
  t.match(credentials.accessKeyId, /^ASIA/, 'the SDK got the emulator\'s credentials through the agent');
  t.ok(credentials.expiration !== undefined && credentials.expiration.getTime() > Date.now(), 'unexpired');

  agent.kill('SIGTERM');
  t.same(await agentExit, [0, null], 'the agent stops on SIGTERM');
  t.notOk(agentOutput().includes(credentials.secretAccessKey), 'the agent logged no secret it handed out');
  emulator.kill('SIGINT');
  t.same(await emulatorExit, [0, null], 'Ctrl-C stops the emulator');
  t.match(emulatorOutput(), /stopped \(SIGINT\); 1 EKS Auth calls answered/);
  await t.rejects(access(tokenFile), { code: 'ENOENT' }, 'the token file is removed');
});
