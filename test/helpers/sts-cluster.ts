// A cluster outside EKS, on loopback: a token issuer, a fake API server that publishes its keys
// and lists node-a's pods, an STS emulator, an associations file, and an agent with --upstream sts.
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import type { Test } from 'tap';
import { type Agent, buildAgent } from '../../src/agent.ts';
import { parseServerArgs } from '../../src/config/index.ts';
import { type StsEmulator, type StsRole, startStsEmulator } from '../emulator/sts-emulator.ts';
import { type TokenIssuer, createTokenIssuer } from '../emulator/token-issuer.ts';
import { createLogger } from '../../src/observability/logger.ts';
import type { RetryPolicy } from '../../src/upstream/retry.ts';
import { type FakeApiServer, type FakePod, startFakeApiServer } from './fake-apiserver.ts';
import { NODE_CREDENTIALS, type Reply, type RequestOptions, sendRequest } from './harness.ts';
import { type LogAudit, createLogAudit } from './log-audit.ts';
export { eventually } from './eventually.ts';

export const NODE = 'node-a';
export const APP_ROLE = 'arn:aws:iam::111122223333:role/app';

export interface StsClusterOptions {
  /** The associations file's entries; `undefined` for no file at all. */
  readonly associations?: readonly object[] | undefined;
  readonly roles?: Record<string, StsRole>;
  readonly args?: readonly string[];
  readonly retry?: RetryPolicy;
  /** Pass the emulator as --endpoint (default); false leaves STS to the SDK's resolution. */
  readonly endpointFlag?: boolean;
  /** Runs once the emulator listens, before the agent is built. */
  readonly beforeAgent?: (sts: StsEmulator, api: FakeApiServer) => void;
  /** Where issuer keys are kept; a fresh directory by default. */
  readonly stateDir?: string;
  /** The STS emulator's clock (epoch ms); the real one by default. */
  readonly stsNow?: () => number;
}

export interface StsCluster {
  readonly agent: Agent;
  readonly sts: StsEmulator;
  readonly api: FakeApiServer;
  readonly issuer: TokenIssuer;
  readonly audit: LogAudit;
  readonly associationsFile: string;
  /** `http://127.0.0.1:PORT/v1/credentials` */
  readonly credentialsUrl: string;
  /** `http://127.0.0.1:PORT/readyz` */
  readonly readyzUrl: string;
  /** Replaces the associations file (by rename, as the kubelet and editors do). */
  writeAssociations(entries: readonly object[]): Promise<void>;
  /** A pod on node-a at 127.0.0.1, listed by the API server. */
  addPod(name: string, serviceAccount?: string, namespace?: string): FakePod;
  token(pod: FakePod): Promise<string>;
  /** One request as the pod; waits out the moment before the agent has listed the node's pods and associations. */
  request(pod: FakePod, options?: RequestOptions): Promise<Reply>;
  send(options: RequestOptions): Promise<Reply>;
}

export async function startStsCluster(t: Test, options: StsClusterOptions = {}): Promise<StsCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'pia-sts-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const audit = createLogAudit();
  audit.secrets.add(NODE_CREDENTIALS.secretAccessKey);
  const issuer = await createTokenIssuer();
  const api = await startFakeApiServer({ issuer: issuer.issuer, jwks: await issuer.jwks(), bookmarkIntervalMs: 200 });
  t.teardown(() => api.close());
  await api.writeKubeconfig(join(dir, 'kubeconfig'));
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(join(dir, 'kubeconfig'));
  const sts = await startStsEmulator({ callerCredentials: [NODE_CREDENTIALS], region: 'us-west-2', roles: options.roles ?? { [APP_ROLE]: {} }, accountId: '444455556666', ...(options.stsNow === undefined ? {} : { now: options.stsNow }) });
  t.teardown(() => sts.close());

  const associationsFile = join(dir, 'associations.yaml');
  const writeAssociations = async (entries: readonly object[]) => {
    await writeFile(`${associationsFile}.next`, JSON.stringify({ associations: entries }));
    await rename(`${associationsFile}.next`, associationsFile);
  };
  if (options.associations !== undefined) await writeAssociations(options.associations);
  options.beforeAgent?.(sts, api);
  const parsed = parseServerArgs(
    [
      ...['--cluster-name', 'lab', '--region', 'us-west-2', '--upstream', 'sts', '--token-verification', 'jwks', '--node-name', NODE, '--state-dir', options.stateDir ?? join(dir, 'state')],
      ...(options.endpointFlag === false ? [] : ['--endpoint', sts.url]),
      ...(options.associations === undefined ? [] : ['--associations', associationsFile]),
      ...['--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', '-v', 'debug'],
      ...(options.args ?? []),
    ],
    {},
  );
  const agent = buildAgent(parsed.config!, {
    logger: createLogger({ level: 'debug', destination: audit.sink }),
    credentialProvider: async () => NODE_CREDENTIALS,
    kubernetes: { kubeConfig, source: 'KUBECONFIG' },
    ...(options.retry === undefined ? {} : { retry: options.retry }),
  });
  const addresses = await agent.listen();
  t.teardown(async () => {
    await agent.close();
    audit.assertClean();
  });
  const port = addresses.credentials[0]!.port;
  const send = (requestOptions: RequestOptions) => sendRequest(port, requestOptions, audit);
  const token = async (pod: FakePod) => {
    const jwt = await issuer.issue({ namespace: pod.namespace, serviceAccount: pod.serviceAccountName ?? 'default', podName: pod.name, podUid: pod.uid });
    audit.secrets.add(jwt);
    return jwt;
  };
  return {
    agent,
    sts,
    api,
    issuer,
    audit,
    associationsFile,
    credentialsUrl: `http://127.0.0.1:${port}/v1/credentials`,
    readyzUrl: `http://127.0.0.1:${addresses.probe.port}/readyz`,
    writeAssociations,
    addPod(name, serviceAccount = 'app', namespace = 'default') {
      const pod: FakePod = { namespace, name, uid: `uid-${name}`, nodeName: NODE, podIP: '127.0.0.1', serviceAccountName: serviceAccount };
      api.addPod(pod);
      return pod;
    },
    token,
    async request(pod, requestOptions = {}) {
      const authorization = await token(pod);
      // However long a loaded machine takes to list: the limit only turns a hang into an answer.
      const deadline = Date.now() + 30_000;
      for (;;) {
        const reply = await send({ authorization, ...requestOptions });
        // Answers that only mean "not listed yet": this node's pods, or the associations ConfigMap.
        const settling = reply.json?.Code === 'PodListUnavailable' || reply.json?.Code === 'PodNotOnNode' || reply.json?.Code === 'AssociationsUnavailable';
        if (!settling || Date.now() > deadline) return reply;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    send,
  };
}
