import { request } from 'node:http';
import type { Test } from 'tap';
import { type Agent, type AgentAddresses, buildAgent } from '../../src/agent.ts';
import { parseServerArgs } from '../../src/config/index.ts';
import type { LoadedKubeConfig } from '../../src/k8s/kube-config.ts';
import type { EksAuthEmulator, EmulatorOptions } from '../emulator/eks-auth-emulator.ts';
import { type EmulatedCluster, startEmulatedCluster } from '../emulator/emulated-cluster.ts';
import type { IssueOptions, TokenIssuer } from '../emulator/token-issuer.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../../src/upstream/retry.ts';
import { type LogAudit, createLogAudit } from './log-audit.ts';

/** What every harness agent answers /readyz's check of the pods' path with. */
export const SELF_CHECK_ID = 'harness-self-check';

export const NODE_CREDENTIALS = Object.freeze({ accessKeyId: 'AKIANODEEXAMPLE00001', secretAccessKey: 'node-secret-access-key-0000000000000000000' });

/**
 * The shipped policy's attempts and backoff, with time limits no loaded machine reaches: for tests
 * that count upstream calls but are not about time, so that a stalled event loop cannot turn a slow
 * answer into an extra attempt. Tests about the time limits use DEFAULT_RETRY_POLICY or their own.
 */
export const PATIENT_RETRY: RetryPolicy = Object.freeze({ ...DEFAULT_RETRY_POLICY, attemptTimeoutMs: 30_000, budgetMs: 60_000 });

export interface HarnessOptions {
  readonly args?: readonly string[];
  readonly retry?: RetryPolicy;
  /** The agent's clock (see helpers/clock.ts); the real one by default. */
  readonly now?: () => number;
  readonly emulator?: Partial<EmulatorOptions>;
  /** The API server's configuration; none by default, whatever the machine has. */
  readonly kubernetes?: LoadedKubeConfig | null;
  /** Runs once the emulated cluster exists and before the agent starts (say, a fake API server trusting its issuer). */
  readonly beforeAgent?: (cluster: EmulatedCluster) => Promise<{ kubernetes?: LoadedKubeConfig; args?: readonly string[] }>;
}

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly json: Record<string, unknown> | undefined;
}

export interface RequestOptions {
  readonly path?: string;
  readonly method?: string;
  readonly host?: string;
  readonly authorization?: string;
  /** The client's own address, to act as another pod (any 127.x works on Linux loopback). */
  readonly localAddress?: string;
}

export interface Harness {
  readonly agent: Agent;
  readonly addresses: AgentAddresses;
  readonly emulator: EksAuthEmulator;
  readonly issuer: TokenIssuer;
  readonly audit: LogAudit;
  /** `http://127.0.0.1:PORT/v1/credentials` */
  readonly credentialsUrl: string;
  /** A token for a pod; recorded so that the log audit can look for it. */
  token(options?: Partial<IssueOptions>): Promise<string>;
  send(options?: RequestOptions): Promise<Reply>;
}

/** The emulated cluster every test uses: cluster c1, two associations, the node's fixed keys. */
export function startTestCluster(overrides: Partial<EmulatorOptions> = {}): Promise<EmulatedCluster> {
  return startEmulatedCluster({
    nodeCredentials: [NODE_CREDENTIALS],
    clusterName: 'c1',
    associations: [
      { namespace: 'default', serviceAccount: 'app', roleArn: 'arn:aws:iam::111122223333:role/app' },
      { namespace: 'team-b', serviceAccount: 'worker', roleArn: 'arn:aws:iam::111122223333:role/worker' },
    ],
    ...overrides,
  });
}

/** Emulator, token issuer and agent on loopback, torn down (and their logs audited) with the test. */
export async function startHarness(t: Test, options: HarnessOptions = {}): Promise<Harness> {
  const audit = createLogAudit();
  audit.secrets.add(NODE_CREDENTIALS.secretAccessKey);
  const cluster = await startTestCluster(options.emulator);
  const { issuer, emulator } = cluster;
  const extra = (await options.beforeAgent?.(cluster)) ?? {};
  const parsed = parseServerArgs(
    ['--cluster-name', 'c1', '--region', 'us-west-2', '--endpoint', emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', '-v', 'debug', ...(options.args ?? []), ...(extra.args ?? [])],
    {},
  );
  const logger = createLogger({ level: parsed.config?.logLevel ?? 'debug', destination: audit.sink });
  const agent = buildAgent(parsed.config!, {
    logger,
    credentialProvider: async () => NODE_CREDENTIALS,
    kubernetes: extra.kubernetes ?? options.kubernetes ?? null,
    selfCheckId: SELF_CHECK_ID,
    ...(options.retry === undefined ? {} : { retry: options.retry }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const addresses = await agent.listen();
  t.teardown(async () => {
    await agent.close();
    await emulator.close();
    audit.assertClean();
  });
  const port = addresses.credentials[0]!.port;
  return {
    agent,
    addresses,
    emulator,
    issuer,
    audit,
    credentialsUrl: `http://127.0.0.1:${port}/v1/credentials`,
    async token(claims = {}) {
      const token = await issuer.issue({ namespace: 'default', serviceAccount: 'app', podName: 'app-7d9f', ...claims });
      audit.secrets.add(token);
      return token;
    },
    send: (requestOptions = {}) => sendRequest(port, requestOptions, audit),
  };
}

/** A raw request, so that tests control the Host header; never through a proxy. */
export function sendRequest(port: number, options: RequestOptions, audit?: LogAudit): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { host: options.host ?? `127.0.0.1:${port}` };
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    const req = request({ host: '127.0.0.1', port, path: options.path ?? '/v1/credentials', method: options.method ?? 'GET', headers, agent: false, ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        const json = parseJson(text);
        if (json !== undefined && typeof json.SecretAccessKey === 'string') audit?.secrets.add(json.SecretAccessKey);
        if (json !== undefined && typeof json.Token === 'string') audit?.secrets.add(json.Token);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
