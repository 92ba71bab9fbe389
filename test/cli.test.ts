import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { VERSION } from '../src/version.ts';
import { IMAGE_NODE_OPTIONS } from '../bench/lib.ts';
import { NODE_CREDENTIALS, type Reply, sendRequest, startTestCluster } from './helpers/harness.ts';
import { BASE_ENV, CLI, START_LIMIT_MS, startServerProcess } from './helpers/cli-process.ts';
import { createLogAudit } from './helpers/log-audit.ts';
import { eventually } from './helpers/eventually.ts';
import { startFakeApiServer } from './helpers/fake-apiserver.ts';
import { startStsEmulator } from './emulator/sts-emulator.ts';
import { type TokenIssuer, createTokenIssuer } from './emulator/token-issuer.ts';

const run = promisify(execFile);

interface Exit {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Exit> {
  try {
    // The limit only catches a process that hangs; every case here exits on its own in about a second.
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env: { ...BASE_ENV, ...env }, timeout: START_LIMIT_MS });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

t.test('version', async (t) => {
  const result = await cli(['version']);
  t.equal(result.code, 0);
  t.equal(result.stdout, `${VERSION}\n`);
});

t.test('compile-cache: fills NODE_COMPILE_CACHE with every chunk of the bundle, and a second run reads every one back', async (t) => {
  const refused = await cli(['compile-cache'], { NODE_COMPILE_CACHE: undefined });
  t.equal(refused.code, 2);
  t.equal(refused.stderr, 'pod-identity-agent compile-cache: NODE_COMPILE_CACHE is not set, so there is no cache to fill\n');
  const cache = await mkdtemp(join(tmpdir(), 'pia-compile-cache-'));
  t.teardown(() => rm(cache, { recursive: true, force: true }));
  t.equal((await cli(['compile-cache'], { NODE_COMPILE_CACHE: cache })).code, 0);
  const chunks = (await readdir(dirname(CLI))).filter((file) => file.endsWith('.js')).sort();
  // A second run loads every chunk again (the agent's included): Node logs each module's verdict on
  // its cached code.
  const again = await cli(['compile-cache'], { NODE_COMPILE_CACHE: cache, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' });
  const accepted = [...again.stderr.matchAll(/V8 code cache for ESM file:\/\/\S+\/([^/\s]+\.js) was accepted/g)].map((match) => match[1]).sort();
  t.same(chunks.filter((file) => !accepted.includes(file)), [], 'every chunk comes from the cache');
  const rejected = [...again.stderr.matchAll(/V8 code cache for ESM file:\/\/\S+\/([^/\s]+\.js) was rejected/g)].map((match) => match[1]);
  t.same(rejected.filter((file) => chunks.includes(file as string)), [], 'none of them is rejected');
  t.ok(chunks.some((file) => file.startsWith('agent-')), 'the agent\'s chunk is one of them');
});

/** A start, credential requests that go upstream (undici compiles its WebAssembly parser), SIGTERM: the process's output. */
async function startAndCallUpstream(t: Test, nodeArgs: string[]): Promise<string> {
  const cluster = await startTestCluster();
  t.teardown(() => cluster.emulator.close());
  // Under the image's NODE_OPTIONS, so that a V8 flag added there is held to the same test.
  const server = await startServerProcess(t, cluster, [], { NODE_OPTIONS: IMAGE_NODE_OPTIONS }, nodeArgs);
  for (const podName of ['app-1', 'app-2', 'app-3']) {
    const token = await cluster.issuer.issue({ namespace: 'default', serviceAccount: 'app', podName });
    t.equal((await sendRequest(server.ports.credentials, { authorization: token })).status, 200, `${podName}: an upstream call`);
  }
  t.equal(cluster.emulator.calls.length, 3, 'each one went upstream');
  server.child.kill('SIGTERM');
  t.equal((await server.exited).code, 0);
  return server.output();
}

t.test("every Node.js built-in comes from Node's own code cache, through a start and upstream calls (V8's flags stay as that cache was made under)", async (t) => {
  const probe = new URL('./helpers/builtin-cache-probe.ts', import.meta.url).pathname;
  const output = await startAndCallUpstream(t, ['--expose-internals', '--import', probe]);
  const line = /^builtin-cache-usage (.*)$/m.exec(output)?.[1];
  t.ok(line, 'the probe reported', { output });
  const usage = JSON.parse(line ?? '{}') as { withCache?: string[]; withoutCache?: string[] };
  t.ok((usage.withCache ?? []).includes('http'), 'node:http among those read from the cache');
  t.same(usage.withoutCache, [], 'none compiled from source');
});

t.test("undici's WebAssembly parser stays on V8's baseline tier (Liftoff), however hot", async (t) => {
  // A tiering budget of 1 tiers up a function at its first call, where tiering is allowed.
  const output = await startAndCallUpstream(t, ['--trace-wasm-compilation-times', '--wasm-tiering-budget=1']);
  t.match(output, /Compiled function \S+ using Liftoff/, 'the parser was compiled');
  t.notMatch(output, /using TurboFan/, 'and never by the optimizing tier');
});

/** The machine's own Node.js, older than the engines' 22.19 (this CI machine's /usr/bin/node is 20). */
const OLD_NODE = '/usr/bin/node';

const oldVersion = await run(OLD_NODE, ['--version']).then(({ stdout }) => stdout.trim(), () => undefined);
const [oldMajor = 0, oldMinor = 0] = (oldVersion ?? 'v0.0').slice(1).split('.').map(Number);
const haveOldNode = oldVersion !== undefined && (oldMajor < 22 || (oldMajor === 22 && oldMinor < 19));

t.test('on a Node.js older than 22.19, every command exits 1 with one line saying what is needed', { skip: haveOldNode ? false : `needs a Node.js older than 22.19 at ${OLD_NODE} (found ${oldVersion ?? 'none'})` }, async (t) => {
  const version = oldVersion ?? '';
  for (const args of [['version'], ['server', '--cluster-name', 'c1', '--region', 'us-west-2'], ['initialize', '--help']]) {
    const exit = await run(OLD_NODE, [CLI, ...args], { env: BASE_ENV, timeout: START_LIMIT_MS }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
    t.equal(exit.code, 1, `${args[0]}: exit 1`);
    t.equal(exit.stdout, '', `${args[0]}: nothing on stdout`);
    t.equal(exit.stderr, `pod-identity-agent: Node.js ${version.slice(1)} is not supported: it needs Node.js 22.19 or later (24 LTS recommended)\n`, `${args[0]}: one line naming the versions`);
  }
});

t.test('start-up fails fast with one clear line', async (t) => {
  const region = { AWS_REGION: 'us-west-2' };
  // Listeners bind only once the node's credentials resolve (daemonset/README.md, "Upgrades"): static ones here.
  const signing = { ...region, AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret' };
  const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
    ['missing cluster name', ['server'], region, /--cluster-name is required/],
    ['bad cluster name', ['server', '--cluster-name', 'bad name!'], region, /not a valid EKS cluster name/],
    // daemonset/example's placeholders, as its copy renders them when nobody filled them in.
    ['the example overlay\'s cluster name', ['server', '--cluster-name', 'CHANGE-ME-cluster-name'], region, /--cluster-name "CHANGE-ME-cluster-name" is the example overlay's placeholder/],
    ['the example overlay\'s region', ['server', '--cluster-name', 'c1'], { AWS_REGION: 'CHANGE-ME-region' }, /region "CHANGE-ME-region" is not an AWS region name/],
    ['missing region', ['server', '--cluster-name', 'c1'], {}, /no region: set --region, AWS_REGION or AWS_DEFAULT_REGION/],
    ['bad duration', ['server', '--cluster-name', 'c1', '--max-credential-retention-before-renewal', 'forever'], region, /"forever" is not a duration/],
    ['bad port', ['server', '--cluster-name', 'c1', '--port', 'eighty'], region, /--port: "eighty" is not a port number/],
    ['unbindable IPv4 address', ['server', '--cluster-name', 'c1', '--bind-hosts', '192.0.2.1', '--port', '0', '--probe-port', '0', '--metrics-port', '0'], signing, /cannot listen on 192\.0\.2\.1:0: EADDRNOTAVAIL/],
    ['unknown command', ['serve'], {}, /unknown command "serve"/],
    ['STS without verification', ['server', '--cluster-name', 'c1', '--upstream', 'sts', '--associations', '/dev/null', '--token-verification', 'none'], region, /--upstream sts needs tokens verified locally/],
    ['STS with no Kubernetes API to verify against', ['server', '--cluster-name', 'c1', '--upstream', 'sts', '--associations', '/dev/null', '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-port', '0'], region, /--upstream sts needs tokens verified locally, and they cannot be here/],
  ];
  // The cases are independent processes: started together, so that eleven start-ups on a loaded
  // machine do not add up to most of the file's time limit (run one by one they took a minute).
  const results = await Promise.all(cases.map(([, args, env]) => cli(args, env)));
  for (const [i, [name, , , message]] of cases.entries()) {
    const result = results[i]!;
    t.not(result.code, 0, `${name}: non-zero exit`);
    t.match(result.stderr, message, name);
    t.equal(result.stderr.trim().split('\n').filter((line) => line.startsWith('pod-identity-agent')).length, 1, `${name}: one line`);
  }
});

t.test('a port already in use is fatal', async (t) => {
  // Held by this test from listen(0) to the end: the port is in use for certain, and by us alone.
  const holder = createServer().listen(0, '127.0.0.1');
  await once(holder, 'listening');
  t.teardown(() => holder.close());
  const { port } = holder.address() as AddressInfo;
  const result = await cli(['server', '--cluster-name', 'c1', '--region', 'us-west-2', '--bind-hosts', '127.0.0.1', '--port', String(port), '--probe-port', '0', '--metrics-port', '0'], { AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret' });
  t.equal(result.code, 1);
  t.match(result.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
});

t.test('the documented command line serves credentials; an absent IPv6 bind host is a warning; SIGTERM exits 0', async (t) => {
  const cluster = await startTestCluster();
  const { issuer, emulator } = cluster;
  t.teardown(() => emulator.close());
  const server = await startServerProcess(t, cluster, ['--bind-hosts', '127.0.0.1,[fd00:ec2::23]']);
  const { credentials: port, probe: probePort, metrics: metricsPort } = server.ports;
  const output = server.output;

  const audit = createLogAudit();
  audit.secrets.add(NODE_CREDENTIALS.secretAccessKey);
  const token = await issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: 'app-1' });
  audit.secrets.add(token);
  const reply = await sendRequest(port, { authorization: token }, audit);
  t.equal(reply.status, 200);
  t.match(reply.json, { AccessKeyId: /^ASIA/, AccountId: '111122223333' });
  t.match(emulator.calls, [{ status: 200, accessKeyId: NODE_CREDENTIALS.accessKeyId }], 'signed with the node credentials from the environment');

  const healthz = await sendRequest(probePort, { path: '/healthz', host: '127.0.0.1' });
  t.equal(healthz.status, 200);
  const readyz = await sendRequest(probePort, { path: '/readyz', host: '127.0.0.1' });
  t.equal(readyz.status, 200, readyz.text);
  t.match(readyz.json, { ready: true, checks: { listeners: [{ address: `127.0.0.1:${port}`, ok: true }], nodeCredentials: { ok: true } } });
  const metrics = await sendRequest(metricsPort, { path: '/metrics', host: '127.0.0.1' });
  t.match(metrics.text, /pod_identity_http_response\{code="200"\} 1/);

  server.child.kill('SIGTERM');
  t.equal((await server.exited).code, 0, 'SIGTERM exits 0');
  const lines = output().trim().split('\n');
  const logs = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  t.match(logs[0], { level: 'info', msg: 'starting pod-identity-agent', version: VERSION, config: { clusterName: 'c1', endpointSource: '--endpoint' } });
  t.match(logs.find((line) => line.address === 'fd00:ec2::23'), { level: 'warn', msg: /IPv6 bind host unavailable/ });
  t.equal(logs.filter((line) => line.level === 'warn' && /Kubernetes/.test(String(line.msg))).length, 1, 'one warning about Kubernetes');
  // `auto` is resolved after the start-up line: it says so, and the trust line gives the outcome.
  t.match(logs[0], { config: { tokenVerification: /^auto: .*Kubernetes trust set up/, podBinding: /^auto: / } });
  t.match(logs.find((line) => line.msg === 'Kubernetes trust set up'), { level: 'info', tokenVerification: 'none', podBinding: 'off' }, 'what auto resolved to');
  t.match(logs.find((line) => /Kubernetes configuration/.test(String(line.msg))), { level: 'warn', msg: /no Kubernetes configuration .*not verified locally and not bound to pods/ });
  t.match(logs.at(-1), { msg: 'stopped' });
  const leaks = lines.filter((line) => line.includes(token) || line.includes(NODE_CREDENTIALS.secretAccessKey) || (reply.json !== undefined && line.includes(String(reply.json.SecretAccessKey))));
  t.same(leaks, [], 'no token or secret in the process output');
});

/** The pod both bundle tests ask for credentials as: on node-a, at the loopback address the requests come from. */
const APP_POD = { namespace: 'default', name: 'app-1', uid: 'uid-app-1', nodeName: 'node-a', podIP: '127.0.0.1', serviceAccountName: 'app' };

/**
 * A fake API server trusting `issuer`'s keys, with APP_POD listed; its kubeconfig in a fresh directory
 * (the agent's --state-dir too), given as `env`. Closed with the test, and `upstream` with it.
 */
async function apiServerFor(t: Test, issuer: TokenIssuer, upstream: { close(): Promise<void> }) {
  const api = await startFakeApiServer({ issuer: issuer.issuer, jwks: await issuer.jwks() });
  const dir = await mkdtemp(join(tmpdir(), 'cli-kubernetes-'));
  t.teardown(async () => {
    await Promise.all([upstream.close(), api.close()]);
    await rm(dir, { recursive: true, force: true });
  });
  await api.writeKubeconfig(join(dir, 'kubeconfig'));
  api.addPod(APP_POD);
  return { api, dir, env: { KUBECONFIG: join(dir, 'kubeconfig') } };
}

// The tests of token verification and pod binding run the agent from src/; the bundle reaches the API
// server through build.ts's own entry into undici, and this is where that path is run.
t.test('the bundle verifies tokens with the API server\'s keys and binds them to this node\'s pods', async (t) => {
  const cluster = await startTestCluster();
  const { issuer, emulator } = cluster;
  const { api, dir, env } = await apiServerFor(t, issuer, emulator);
  const here = APP_POD;
  api.addPod({ ...here, name: 'app-2', uid: 'uid-app-2', nodeName: 'node-b' });
  const server = await startServerProcess(t, cluster, ['--token-verification', 'jwks', '--pod-binding', 'on', '--node-name', 'node-a', '--state-dir', dir], env);
  t.match(await server.logged((line) => line.msg === 'Kubernetes trust set up'), { tokenVerification: 'jwks', podBinding: 'on' });

  const token = (pod: typeof here) => issuer.issue({ namespace: pod.namespace, serviceAccount: 'app', podName: pod.name, podUid: pod.uid });
  const port = server.ports.credentials;
  await eventually(async () => (await sendRequest(port, { authorization: await token(here) })).status === 200, 'the pod on this node to get credentials');
  const elsewhere = await sendRequest(port, { authorization: await token({ ...here, name: 'app-2', uid: 'uid-app-2' }) });
  t.equal(elsewhere.status, 403, 'a pod of another node is refused');
  t.equal(elsewhere.json?.Code, 'PodNotOnNode');
  const forged = await sendRequest(port, { authorization: `${(await token(here)).slice(0, -4)}AAAA` });
  t.equal(forged.status, 401, 'a token whose signature does not verify is refused');

  const called = api.requests.map((request) => `${request.method} ${request.path}${request.query.watch === 'true' ? ' (watch)' : ''}`);
  for (const call of ['GET /.well-known/openid-configuration', 'GET /openid/v1/jwks', 'GET /api/v1/pods', 'GET /api/v1/pods (watch)']) t.ok(called.includes(call), `${call} was called`);
  t.ok(api.requests.every((request) => request.authenticated), 'every call carried the kubeconfig\'s token');
});

// The associations' YAML parser is a chunk of its own, loaded with --upstream sts (src/associations/association.ts).
t.test('the bundle with --upstream sts reads a YAML associations file and answers with the role\'s credentials', async (t) => {
  const issuer = await createTokenIssuer();
  const role = 'arn:aws:iam::444455556666:role/app';
  const sts = await startStsEmulator({ callerCredentials: [NODE_CREDENTIALS], region: 'us-west-2', roles: { [role]: {} }, accountId: '444455556666' });
  const { dir, env } = await apiServerFor(t, issuer, sts);
  await writeFile(join(dir, 'associations.yaml'), `associations:\n  - namespace: default\n    serviceAccount: app\n    roleArn: ${role}\n`);
  const args = ['--upstream', 'sts', '--associations', join(dir, 'associations.yaml'), '--token-verification', 'jwks', '--node-name', 'node-a', '--state-dir', dir];
  const server = await startServerProcess(t, { clusterName: 'lab', region: 'us-west-2', emulator: { url: sts.url } }, args, env);
  t.match(await server.logged((line) => line.msg === 'associations loaded'), { associations: 1, refused: 0 });
  const token = await issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: APP_POD.name, podUid: APP_POD.uid });
  let reply: Reply | undefined;
  await eventually(async () => (reply = await sendRequest(server.ports.credentials, { authorization: token })).status === 200, 'the pod to get credentials');
  t.match(reply?.json, { AccessKeyId: /^ASIA/, AccountId: '444455556666' });
});
