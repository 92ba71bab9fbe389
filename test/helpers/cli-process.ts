import { type ChildProcess, spawn } from 'node:child_process';
import type { Test } from 'tap';
import type { EmulatedCluster } from '../emulator/emulated-cluster.ts';
import { NODE_CREDENTIALS } from './harness.ts';

export const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;
/** No inherited AWS settings, no instance metadata: only what each test gives the process. */
export const BASE_ENV = { PATH: process.env.PATH ?? '', HOME: '/nonexistent', AWS_EC2_METADATA_DISABLED: 'true' };
/**
 * How long a child process may take to start before the test gives up on it: only a hang detector,
 * far beyond a start-up on a loaded 2-core machine (about a second unloaded).
 */
export const START_LIMIT_MS = 60_000;

export interface ServerProcess {
  readonly child: ChildProcess;
  /** The ports the process bound (it was given port 0 for each), read from its log. */
  readonly ports: { readonly credentials: number; readonly probe: number; readonly metrics: number };
  /** Everything the process wrote, stdout and stderr. */
  output(): string;
  /** The process's log lines so far (stdout), parsed; lines that are not JSON are left out. */
  logs(): Record<string, unknown>[];
  /** Settles on the first log line `match` accepts, whether already written or still to come. */
  logged(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** The exit code and when the process exited and its output ended (performance.now()). */
  readonly exited: Promise<{ code: number | null; at: number }>;
}

function parseLines(output: string): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  // Only whole lines: the last one may still be arriving.
  for (const line of output.split('\n').slice(0, -1)) {
    try {
      const value: unknown = JSON.parse(line);
      if (typeof value === 'object' && value !== null) lines.push(value as Record<string, unknown>);
    } catch {
      // stderr text, say
    }
  }
  return lines;
}

/** `127.0.0.1:PORT` -> PORT */
const portOf = (address: unknown): number => Number(/:(\d+)$/.exec(String(address))?.[1] ?? Number.NaN);

/** What startServerProcess reads of a cluster: an EKS Auth emulator's, or an STS emulator's URL for --endpoint. */
export type ServerUpstream = Pick<EmulatedCluster, 'clusterName' | 'region'> & { readonly emulator: { readonly url: string } };

/**
 * `pod-identity-agent server` against the cluster's emulator on loopback, killed with the test. Every
 * port is 0, so the system picks free ones and keeps them: the bound ports come from the log lines
 * 'serving credentials' and 'probes and metrics listening'. `nodeArgs` go to Node.js, before the bundle.
 */
export async function startServerProcess(t: Test, cluster: ServerUpstream, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<ServerProcess> {
  const args = ['server', '--cluster-name', cluster.clusterName, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', '--endpoint', cluster.emulator.url, ...extraArgs];
  const child = spawn(process.execPath, [...nodeArgs, CLI, ...args], {
    env: { ...BASE_ENV, AWS_REGION: cluster.region, AWS_ACCESS_KEY_ID: NODE_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: NODE_CREDENTIALS.secretAccessKey, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let output = '';
  // The log is parsed from stdout alone: a stderr chunk could land in the middle of a line of it.
  let stdout = '';
  const waiters = new Set<() => void>();
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    output += chunk;
    stdout += chunk;
    for (const waiter of [...waiters]) waiter();
  });
  child.stderr.on('data', (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on('close', (code) => resolve({ code, at: performance.now() })));
  const logs = () => parseLines(stdout);
  const logged = (match: (line: Record<string, unknown>) => boolean) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const check = () => {
        const line = logs().find(match);
        if (line === undefined) return;
        waiters.delete(check);
        resolve(line);
      };
      waiters.add(check);
      check();
    });

  let timer: NodeJS.Timeout | undefined;
  const started = await Promise.race([
    logged((line) => line.msg === 'probes and metrics listening'),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`server did not start within ${START_LIMIT_MS} ms:\n${output}`)), START_LIMIT_MS);
    }),
    exited.then(({ code }) => Promise.reject(new Error(`server exited with ${code}:\n${output}`))),
  ]).finally(() => clearTimeout(timer));
  // Logged before the probes line, once per bind host that could be bound.
  const serving = logs().find((line) => line.msg === 'serving credentials');
  const ports = { credentials: Number(serving?.port), probe: portOf(started.probe), metrics: portOf(started.metrics) };
  if (!Object.values(ports).every((port) => Number.isInteger(port) && port > 0)) throw new Error(`no bound ports in the log:\n${output}`);
  return { child, ports, output: () => output, logs, logged, exited };
}
