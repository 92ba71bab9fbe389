import { type ChildProcess, spawn } from 'node:child_process';
import type { Test } from 'tap';
import type { EmulatedCluster } from '../emulator/emulated-cluster.ts';
import { NODE_CREDENTIALS, freePort } from './harness.ts';

export const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;
/** No inherited AWS settings, no instance metadata: only what each test gives the process. */
export const BASE_ENV = { PATH: process.env.PATH ?? '', HOME: '/nonexistent', AWS_EC2_METADATA_DISABLED: 'true' };

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly ports: { readonly credentials: number; readonly probe: number; readonly metrics: number };
  /** Everything the process wrote, stdout and stderr. */
  output(): string;
  /** The exit code and when the process exited (performance.now()). */
  readonly exited: Promise<{ code: number | null; at: number }>;
}

/** `pod-identity-agent server` against the cluster's emulator on free loopback ports, killed with the test. */
export async function startServerProcess(t: Test, cluster: EmulatedCluster, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ServerProcess> {
  const ports = { credentials: await freePort(), probe: await freePort(), metrics: await freePort() };
  const args = ['server', '--cluster-name', cluster.clusterName, '--bind-hosts', '127.0.0.1', '--port', String(ports.credentials), '--probe-port', String(ports.probe), '--metrics-address', '127.0.0.1', '--metrics-port', String(ports.metrics), '--endpoint', cluster.emulator.url, ...extraArgs];
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...BASE_ENV, AWS_REGION: cluster.region, AWS_ACCESS_KEY_ID: NODE_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: NODE_CREDENTIALS.secretAccessKey, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let output = '';
  const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.on('exit', (code) => resolve({ code, at: performance.now() })));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 10_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('probes and metrics listening')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then(({ code }) => reject(new Error(`server exited with ${code}:\n${output}`)));
  });
  return { child, ports, output: () => output, exited };
}
