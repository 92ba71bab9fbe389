// --startup-taint end to end: the agent, the real @kubernetes/client-node and the fake API server.
// A new node carries the taint until its agent is ready; then the agent removes that taint, and
// only it, with optimistic concurrency, whatever else writes to the Node meanwhile.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { type Agent, type AgentAddresses, buildAgent } from '../src/agent.ts';
import { ConfigError, parseServerArgs } from '../src/config/index.ts';
import { createLogger } from '../src/observability/logger.ts';
import { eventually } from './helpers/eventually.ts';
import { type FakeApiServer, type FakeNode, type FakeTaint, kubeConfigFor, startFakeApiServer } from './helpers/fake-apiserver.ts';
import { NODE_CREDENTIALS, SELF_CHECK_ID, sendRequest, startTestCluster } from './helpers/harness.ts';
import { type LogAudit, createLogAudit } from './helpers/log-audit.ts';

const NODE = 'ip-10-0-1-23.us-west-2.compute.internal';
const KEY = 'pod-identity-agent.dev/agent-not-ready';
const STARTUP_TAINT: FakeTaint = { key: KEY, value: 'true', effect: 'NoSchedule' };
// Another controller's taints: one with a timestamp, one the kubelet's own.
const OTHER_TAINTS: FakeTaint[] = [
  { key: 'example.com/dedicated', value: 'gpu', effect: 'NoSchedule', timeAdded: '2026-11-25T12:00:00Z' },
  { key: 'node.kubernetes.io/not-ready', effect: 'NoExecute', timeAdded: '2026-11-25T12:00:01Z' },
];

/** A new node as a provisioner registers it, with fields client-node's models do not know. */
function newNode(taints: FakeTaint[]): FakeNode {
  return {
    metadata: {
      name: NODE,
      uid: 'node-uid-1',
      creationTimestamp: new Date(Date.now() - 30_000).toISOString().replace(/\.\d+Z$/, 'Z'),
      labels: { 'karpenter.sh/nodepool': 'default', 'topology.kubernetes.io/zone': 'us-west-2a' },
      annotations: { 'karpenter.sh/nodepool-hash': '1234', 'node.alpha.kubernetes.io/ttl': '0' },
    },
    spec: { providerID: 'aws:///us-west-2a/i-0123456789abcdef0', taints, futureField: { keep: ['me'] } },
    status: { conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

interface Node {
  readonly agent: Agent;
  readonly addresses: AgentAddresses;
  readonly api: FakeApiServer;
  readonly audit: LogAudit;
  /** How often the agent has asked for the node's credentials (each /readyz does once). */
  readonly credentialReads: () => number;
  setCredentials(available: boolean): void;
  taints(): FakeTaint[];
  writes(): { body: string }[];
  metric(result: string): Promise<number | undefined>;
  token(): Promise<string>;
}

interface NodeOptions {
  readonly taints?: FakeTaint[];
  readonly args?: readonly string[];
  readonly credentials?: boolean;
  readonly apiDown?: boolean;
}


/** A new node: its Node object in the fake API server, the EKS Auth emulator, and its agent, started. */
async function startNode(t: Test, options: NodeOptions = {}): Promise<Node> {
  const { issuer, emulator } = await startTestCluster();
  t.teardown(() => emulator.close());
  const api = await startFakeApiServer({ issuer: issuer.issuer, jwks: await issuer.jwks(), bookmarkIntervalMs: 0 });
  t.teardown(() => api.close());
  api.setNode(newNode(options.taints ?? [OTHER_TAINTS[0]!, STARTUP_TAINT, OTHER_TAINTS[1]!]));
  if (options.apiDown === true) api.setDown(true);
  const stateDir = await mkdtemp(join(tmpdir(), 'pia-state-'));
  t.teardown(() => rm(stateDir, { recursive: true, force: true }));
  const audit = createLogAudit();
  audit.secrets.add(NODE_CREDENTIALS.secretAccessKey);
  let available = options.credentials ?? true;
  let reads = 0;
  // Without node credentials listen() does not resolve (nothing is bound for pods until they do),
  // while probes and metrics already answer: their ports come from the line logged once they are bound.
  const { config } = parseServerArgs(
    ['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', '-v', 'debug', '--node-name', NODE, '--state-dir', stateDir, '--startup-taint', KEY, ...(options.args ?? [])],
    {},
  );
  const agent = buildAgent(config!, {
    logger: createLogger({ level: 'debug', destination: audit.sink }),
    credentialProvider: async () => {
      reads += 1;
      if (!available) throw new Error('the instance profile has no credentials yet');
      return NODE_CREDENTIALS;
    },
    kubernetes: await kubeConfigFor(t, api),
    selfCheckId: SELF_CHECK_ID,
    startupTaint: { readyPollMs: 20, retryBaseMs: 20 },
  });
  const listening = agent.listen();
  listening.catch(() => undefined);
  const boundLine = 'probes and metrics bound; the credential listeners follow once the agent can answer';
  const portOf = (where: unknown) => Number(String(where).split(':').at(-1));
  let addresses: AgentAddresses;
  if (options.credentials === false) {
    await eventually(() => audit.lines.some((line) => line.msg === boundLine) && reads >= 1, 'the agent bound its probes and waiting for node credentials');
    const bound = audit.lines.find((line) => line.msg === boundLine);
    addresses = { credentials: [], probe: { address: '127.0.0.1', family: 'IPv4', port: portOf(bound?.probe) }, metrics: { address: '127.0.0.1', family: 'IPv4', port: portOf(bound?.metrics) } };
  } else {
    addresses = await listening;
  }
  t.teardown(async () => {
    await agent.close();
    audit.assertClean();
  });
  const nodePath = `/api/v1/nodes/${NODE}`;
  return {
    agent,
    addresses,
    api,
    audit,
    credentialReads: () => reads,
    setCredentials: (value) => {
      available = value;
    },
    taints: () => api.getNode(NODE)?.spec.taints ?? [],
    writes: () => api.requests.filter((r) => r.path === nodePath && (r.method === 'PATCH' || r.method === 'PUT')).map((r) => ({ body: r.body ?? '' })),
    async metric(result) {
      const text = (await sendRequest(addresses.metrics!.port, { path: '/metrics', host: '127.0.0.1' })).text;
      const series = `pod_identity_startup_taint_removals_total{result="${result}"} `;
      const line = text.split('\n').find((l) => l.startsWith(series));
      return line === undefined ? undefined : Number(line.slice(series.length));
    },
    async token() {
      const token = await issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: 'job-x1' });
      audit.secrets.add(token);
      return token;
    },
  };
}

const readyz = async (n: Node) => (await sendRequest(n.addresses.probe.port, { path: '/readyz', host: '127.0.0.1' })).status;
const logged = (n: Node, msg: string) => n.audit.lines.filter((line) => line.msg === msg);
const REMOVED = 'startup taint removed: pods may now be scheduled on this node';
const RETRYING = 'the startup taint could not be removed yet; retrying (pods still wait for this node)';

t.test('the taint stays while the agent is not ready, and goes once it is', async (t) => {
  const n = await startNode(t, { credentials: false });
  await eventually(() => n.credentialReads() >= 3, 'readiness asked several times');
  t.equal(await readyz(n), 503, 'not ready: the node\'s credentials do not resolve');
  t.ok(n.taints().some((taint) => taint.key === KEY), 'the taint is still on the node');
  t.same(n.writes(), [], 'and nothing was written');
  t.equal(await n.metric('removed'), undefined);

  n.setCredentials(true);
  await eventually(() => !n.taints().some((taint) => taint.key === KEY), 'the taint removed');
  t.equal(await readyz(n), 200);
  t.equal(n.writes().length, 1, 'one write');
  await eventually(() => logged(n, REMOVED).length === 1, 'the removal logged');
  t.match(logged(n, REMOVED)[0], { level: 'info', node: NODE, taint: KEY, effects: ['NoSchedule'], waitedMs: Number, nodeAgeSeconds: Number });
  t.equal(await n.metric('removed'), 1, 'and counted');
});

t.test('only that taint goes: other taints, labels, annotations and unknown fields are untouched', async (t) => {
  // The same key with a second effect is the same startup taint: both go.
  const n = await startNode(t, { taints: [STARTUP_TAINT, OTHER_TAINTS[0]!, { key: KEY, effect: 'NoExecute' }, OTHER_TAINTS[1]!] });
  const before = n.api.getNode(NODE)!;
  await eventually(() => logged(n, REMOVED).length === 1, 'the removal');
  const after = n.api.getNode(NODE)!;
  t.same(after.spec.taints, OTHER_TAINTS, 'the other taints, in order, timestamps and all');
  t.same({ ...after, metadata: { ...after.metadata, resourceVersion: '' }, spec: { ...after.spec, taints: [] } }, { ...before, metadata: { ...before.metadata, resourceVersion: '' }, spec: { ...before.spec, taints: [] } }, 'nothing else changed');
  t.match(logged(n, REMOVED)[0], { effects: ['NoSchedule', 'NoExecute'] });
  const [write] = n.writes();
  const patch = JSON.parse(write!.body) as { op: string; path: string; value?: unknown }[];
  t.same(patch, [
    { op: 'replace', path: '/metadata/resourceVersion', value: before.metadata.resourceVersion },
    { op: 'remove', path: '/spec/taints/2' },
    { op: 'remove', path: '/spec/taints/0' },
  ], 'a JSON patch removing exactly those entries, conditional on the version read: the list is never sent back');
});

t.test('a conflict is retried: another writer\'s change made meanwhile survives', async (t) => {
  const added: FakeTaint = { key: 'example.com/draining', effect: 'NoSchedule' };
  const n = await startNode(t, { credentials: false });
  await eventually(() => n.credentialReads() >= 1, 'the agent waiting');
  // Between the agent's read and its write, a controller adds a taint and a label.
  n.api.raceNextNodeWrite((node) => {
    node.spec.taints = [...(node.spec.taints ?? []), added];
    node.metadata.labels = { ...node.metadata.labels, 'example.com/drained': 'soon' };
  });
  n.setCredentials(true);
  await eventually(() => logged(n, REMOVED).length === 1, 'the removal');
  t.equal(n.writes().length, 2, 'the first write lost the race (409) and was made again on a fresh read');
  t.same(n.taints(), [...OTHER_TAINTS, added], 'the other writer\'s taint is kept');
  t.equal(n.api.getNode(NODE)?.metadata.labels?.['example.com/drained'], 'soon', 'and its label');
  t.equal(await n.metric('conflict'), 1);
  t.equal(await n.metric('removed'), 1);
});

t.test('a node without the taint is left alone', async (t) => {
  const n = await startNode(t, { taints: OTHER_TAINTS });
  const version = n.api.getNode(NODE)?.metadata.resourceVersion;
  await eventually(() => logged(n, 'the startup taint is not on this node: nothing to remove').length === 1, 'the outcome logged');
  t.same(n.writes(), [], 'no write');
  t.equal(n.api.getNode(NODE)?.metadata.resourceVersion, version, 'the node unchanged');
  t.equal(await n.metric('absent'), 1);
  t.equal(await n.metric('removed'), undefined);
});

t.test('an API server outage at start delays the removal, never the serving', async (t) => {
  // Token verification off, so that start-up does not wait for the issuer's keys either.
  const n = await startNode(t, { apiDown: true, args: ['--token-verification', 'none'] });
  t.equal(await readyz(n), 200, 'ready');
  const reply = await sendRequest(n.addresses.credentials[0]!.port, { authorization: await n.token() });
  t.equal(reply.status, 200, 'and serving credentials');
  await eventually(async () => ((await n.metric('failed')) ?? 0) >= 3, 'several failed tries');
  t.ok(n.taints().some((taint) => taint.key === KEY), 'the taint stays meanwhile');
  t.equal(logged(n, RETRYING).length, 1, 'one warning, however many tries');
  n.api.setDown(false);
  await eventually(() => !n.taints().some((taint) => taint.key === KEY), 'the taint removed once the API server is back');
  t.equal(await n.metric('removed'), 1);
});

t.test('a refusal (RBAC, the admission policy) is retried too, and the warning says what is needed', async (t) => {
  const n = await startNode(t, { credentials: false });
  n.api.refuseNodeWrites(403);
  n.setCredentials(true);
  await eventually(async () => ((await n.metric('failed')) ?? 0) >= 2, 'refused tries');
  t.match(logged(n, RETRYING)[0], { level: 'warn', status: 403, error: /forbidden/, hint: /get and patch on nodes/ });
  t.ok(n.taints().some((taint) => taint.key === KEY));
  n.api.refuseNodeWrites(undefined);
  await eventually(() => logged(n, REMOVED).length === 1, 'removed once allowed');
});

t.test('--startup-taint without any Kubernetes configuration is a start-up error', async (t) => {
  const { config } = parseServerArgs(['--cluster-name', 'c1', '--region', 'us-west-2', '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--no-metrics', '--node-name', NODE, '--startup-taint', KEY], {});
  const audit = createLogAudit();
  const agent = buildAgent(config!, { logger: createLogger({ level: 'debug', destination: audit.sink }), credentialProvider: async () => NODE_CREDENTIALS, kubernetes: null });
  await t.rejects(agent.listen(), /--startup-taint needs the Kubernetes API.*would keep its taint/);
  t.notOk(audit.lines.some((line) => line.msg === 'probes and metrics listening'), 'nothing was served');
});

t.test('--startup-taint: a taint key, and the node name', async (t) => {
  const env = { AWS_REGION: 'us-west-2' };
  const problems = (args: string[], environment: Record<string, string> = env) => {
    try {
      parseServerArgs(['--cluster-name', 'c1', ...args], environment);
      return [];
    } catch (error) {
      return (error as ConfigError).problems;
    }
  };
  t.equal(parseServerArgs(['--cluster-name', 'c1', '--startup-taint', KEY], { ...env, NODE_NAME: NODE }).config?.startupTaint, KEY, 'NODE_NAME names the node');
  t.equal(parseServerArgs(['--cluster-name', 'c1'], env).config?.startupTaint, undefined, 'off unless given');
  t.same(problems(['--startup-taint', 'not-ready']), ['--startup-taint needs the node name: --node-name or NODE_NAME']);
  for (const bad of ['', 'a/b/c', 'Example.com/x', 'example.com/', '-x', `example.com/${'x'.repeat(64)}`]) {
    t.match(problems([`--startup-taint=${bad}`, '--node-name', NODE]), [/--startup-taint: ".*" is not a taint key/], JSON.stringify(bad));
  }
});
