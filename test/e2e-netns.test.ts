import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { BASE_ENV, CLI } from './helpers/cli-process.ts';
import { NODE_CREDENTIALS } from './helpers/harness.ts';
import { canMakeNamespaces, inNamespace, makeNodeAndPod, startInNamespace } from './helpers/netns.ts';

const HELPERS = new URL('./helpers/', import.meta.url).pathname;
const AGENT_PORT = '2704';
const unavailable = await canMakeNamespaces();

t.test('a pod in its own network namespace gets credentials from the agent on the node, as in EKS', { skip: unavailable ?? false, timeout: 120_000 }, async (t) => {
  const { node, pod } = await makeNodeAndPod(String(process.pid % 100_000), (cleanup) => t.teardown(cleanup));
  const dir = await mkdtemp(join(tmpdir(), 'pia-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  // The init container's job, twice: the second run must change nothing. The redirect waits for the
  // agent: asked for before anything serves its port, it is not installed.
  const initialize = (...flags: string[]) => inNamespace(node, process.execPath, [CLI, 'initialize', ...flags], BASE_ENV);
  const first = await initialize(`--redirect-port=${AGENT_PORT}`);
  t.match(first.stdout, /added 169\.254\.170\.23\/32 to pod-id-link0/);
  t.match(first.stdout, /added fd00:ec2::23\/128 to pod-id-link0/);
  t.match(first.stdout, /not redirecting port 80: nothing answers on 169\.254\.170\.23:2704 yet/);
  t.notMatch(first.stdout, /redirect TCP/);
  const second = await initialize();
  t.match(second.stdout, /nothing changed/);
  t.notMatch(second.stdout, /added|created|redirect TCP/);

  const emulator = await startInNamespace(t, node, [`${HELPERS}netns-emulator.ts`, dir], BASE_ENV, (output) => output.includes('"url"'));
  const { url } = JSON.parse(emulator.output().split('\n').find((line) => line.includes('"url"')) as string) as { url: string };
  // The agent as the DaemonSet runs it: default bind hosts, unprivileged port, node credentials from the environment.
  await startInNamespace(
    t,
    node,
    [CLI, 'server', '--cluster-name', 'c1', '--endpoint', url, `--port=${AGENT_PORT}`],
    { ...BASE_ENV, AWS_REGION: 'us-west-2', AWS_ACCESS_KEY_ID: NODE_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: NODE_CREDENTIALS.secretAccessKey },
    (output) => output.includes('probes and metrics listening'),
  );
  // The agent answers on its port: now the redirect goes in (node-setup's job in the DaemonSet), once.
  t.match((await initialize(`--redirect-port=${AGENT_PORT}`)).stdout, /redirect TCP port 80 of 169\.254\.170\.23, fd00:ec2::23 to port 2704/);
  t.match((await initialize(`--redirect-port=${AGENT_PORT}`)).stdout, /nothing changed/);

  const tokenFile = join(dir, 'eks-pod-identity-token');
  const podEnv = (uri: string) => ({
    ...BASE_ENV,
    AWS_CONTAINER_CREDENTIALS_FULL_URI: uri,
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: tokenFile,
  });
  const ipv4 = 'http://169.254.170.23/v1/credentials';
  const ipv6 = 'http://[fd00:ec2::23]/v1/credentials';
  const jsClient = async (uri: string) => JSON.parse((await inNamespace(pod, process.execPath, [`${HELPERS}pod-js-client.ts`], podEnv(uri))).stdout) as Record<string, unknown>;

  await writeFile(tokenFile, await readFile(join(dir, 'token-app')));
  const viaIpv4 = await jsClient(ipv4);
  t.match(viaIpv4, { accessKeyId: /^ASIA[A-Z0-9]{16}$/, hasSecret: true }, 'JS default chain over IPv4');
  t.equal((await jsClient(ipv6)).accessKeyId, viaIpv4.accessKeyId, 'JS default chain over IPv6: the same cached identity');

  // The kubelet rotates the token file (here to another service account's token, to tell them apart).
  await writeFile(tokenFile, await readFile(join(dir, 'token-worker')));
  const rotated = await jsClient(ipv4);
  t.match(rotated, { accessKeyId: /^ASIA/ });
  t.not(rotated.accessKeyId, viaIpv4.accessKeyId, 'the rotated token was read and exchanged');

  const python = `
import json, boto3, botocore.exceptions
try:
    credentials = boto3.Session().get_credentials()
    frozen = credentials.get_frozen_credentials()
    print(json.dumps({"method": credentials.method, "accessKeyId": frozen.access_key}))
except botocore.exceptions.BotoCoreError as error:
    print(json.dumps({"error": str(error)}))
`;
  const pyClient = async (uri: string) => JSON.parse((await inNamespace(pod, 'python3', ['-c', python], podEnv(uri))).stdout) as Record<string, unknown>;
  await writeFile(tokenFile, await readFile(join(dir, 'token-app')));
  t.same(await pyClient(ipv4), { method: 'container-role', accessKeyId: viaIpv4.accessKeyId }, 'boto3 over IPv4');
  t.same(await pyClient(ipv6), { method: 'container-role', accessKeyId: viaIpv4.accessKeyId }, 'boto3 over IPv6');
  await writeFile(tokenFile, await readFile(join(dir, 'token-unassociated')));
  t.match(await pyClient(ipv4), { error: /ResourceNotFoundException/ }, 'boto3 shows the agent\'s error code for a missing association');
  // The JS default chain falls back from fromHttp to fromContainerMetadata, whose own refusal of the
  // link-local host is the error it reports: the agent's Code is lost inside the SDK, not here.
  t.match(await jsClient(ipv4), { error: String }, 'the JS SDK gets no credentials either');
});
