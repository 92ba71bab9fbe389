// Benchmark 5: process start to ready, and idle memory, with a Kubernetes configuration present
// (the client loaded, token verification and pod binding on, against the fake API server). The
// window between start and ready is how long a restarting agent refuses pods. Baseline: a bare
// node:http server's start to its first answer, measured in the same run. A second baseline, the
// dependency floor (bench/dependency-floor.js, bundled as the agent is): the agent's runtime
// dependencies imported and node:http serving, so the gap splits into the runtime's and the agent's.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startFakeApiServer } from '../test/helpers/fake-apiserver.ts';
import { buildDependencyFloor } from './floor-build.ts';
import { NODE, imageEnv, runtimeEnv, report, round, rssBytes, startCluster } from './lib.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const ROUNDS = 5;
const MB = 1024 * 1024;

/** The first JSON line `pick` finds a value in, from the child's stdout. */
function fromOutput<T>(child: ChildProcess, pick: (line: Record<string, unknown>) => T | undefined): Promise<T> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      for (const line of buffered.split('\n').slice(0, -1)) {
        const value = (() => {
          try {
            return pick(JSON.parse(line) as Record<string, unknown>);
          } catch {
            return undefined;
          }
        })();
        if (value !== undefined) resolve(value);
      }
      buffered = buffered.slice(buffered.lastIndexOf('\n') + 1);
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before saying where it listens`)));
  });
}

/** Polls `url` from the moment of spawn until it answers `status`; milliseconds from spawn. */
async function timeTo(url: string, status: number, spawned: number, child: ChildProcess): Promise<number> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${url}: the process exited with ${child.exitCode}`);
    try {
      const response = await request(url);
      await response.body.dump();
      if (response.statusCode === status) return performance.now() - spawned;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** A baseline server (bench/bare-server.js or the dependency floor): spawn to its first answer, and RSS 3 s after. */
async function firstAnswer(script: string, env: NodeJS.ProcessEnv): Promise<{ firstAnswerMs: number; rssBytes: number }> {
  const spawned = performance.now();
  const child = spawn(NODE, [script, '0', '700'], { stdio: ['ignore', 'pipe', 'ignore'], env });
  try {
    const port = await fromOutput(child, (line) => (typeof line.port === 'number' ? line.port : undefined));
    const firstAnswerMs = await timeTo(`http://127.0.0.1:${port}/`, 200, spawned, child);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    return { firstAnswerMs, rssBytes: rssBytes(child.pid as number) };
  } finally {
    await stop(child);
  }
}

export async function startup(): Promise<void> {
  const cluster = await startCluster();
  const api = await startFakeApiServer({ issuer: cluster.issuer.issuer, jwks: await cluster.issuer.jwks() });
  const dir = await mkdtemp(join(tmpdir(), 'pia-startup-'));
  await api.writeKubeconfig(join(dir, 'kubeconfig'));
  api.addPod({ namespace: 'bench', name: 'pod-0', uid: 'uid-0', nodeName: 'node-a', podIP: '127.0.0.1' });
  const agentRuns: { readyMs: number; rssBytes: number }[] = [];
  const bareRuns: { firstAnswerMs: number; rssBytes: number }[] = [];
  const floorRuns: { firstAnswerMs: number; rssBytes: number }[] = [];
  const floor = await buildDependencyFloor();
  // Made before the first spawn: the image's compile cache (imageEnv) is made by a run of its own,
  // which the first round's clock once counted.
  const agentEnv = { ...imageEnv(), KUBECONFIG: join(dir, 'kubeconfig'), AWS_ACCESS_KEY_ID: cluster.nodeCredentials.accessKeyId, AWS_SECRET_ACCESS_KEY: cluster.nodeCredentials.secretAccessKey };
  try {
    for (let i = 0; i < ROUNDS; i += 1) {
      const args = ['server', '--cluster-name', cluster.clusterName, '--region', cluster.region, '--endpoint', cluster.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-port', '0', '--metrics-address', '127.0.0.1', '--state-dir', dir, '--node-name', 'node-a', '--token-verification', 'jwks', '--pod-binding', 'on'];
      const spawned = performance.now();
      const agent = spawn(NODE, [`${ROOT}dist/cli.js`, ...args], { stdio: ['ignore', 'pipe', 'ignore'], env: agentEnv });
      try {
        const probe = await fromOutput(agent, (line) => (line.msg === 'probes and metrics listening' ? String(line.probe) : undefined));
        const readyMs = await timeTo(`http://${probe}/readyz`, 200, spawned, agent);
        await new Promise((resolve) => setTimeout(resolve, 3000));
        agentRuns.push({ readyMs, rssBytes: rssBytes(agent.pid as number) });
      } finally {
        await stop(agent);
      }

      bareRuns.push(await firstAnswer(`${ROOT}bench/bare-server.js`, runtimeEnv(false)));
      floorRuns.push(await firstAnswer(floor.script, floor.env));
    }
  } finally {
    await Promise.all([api.close(), cluster.close(), rm(dir, { recursive: true, force: true })]);
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
  const readyMs = median(agentRuns.map((r) => r.readyMs));
  const bareMs = median(bareRuns.map((r) => r.firstAnswerMs));
  const agentRss = median(agentRuns.map((r) => r.rssBytes)) / MB;
  const bareRss = median(bareRuns.map((r) => r.rssBytes)) / MB;
  const floorMs = median(floorRuns.map((r) => r.firstAnswerMs));
  const floorRss = median(floorRuns.map((r) => r.rssBytes)) / MB;
  report(
    'startup',
    { rounds: ROUNDS, agentReadyMs: round(readyMs), bareFirstAnswerMs: round(bareMs), readyRatio: round(readyMs / bareMs, 2), idleRssMB: round(agentRss, 1), bareIdleRssMB: round(bareRss, 1), floorFirstAnswerMs: round(floorMs), floorIdleRssMB: round(floorRss, 1), targets: { readyRatio: '<= 2', idleRssMB: '<= 80' } },
    [
      { measure: 'start to ready ms (agent: /readyz 200; others: first answer)', agent: round(readyMs), bare: round(bareMs), 'dependency floor': round(floorMs), ratio: round(readyMs / bareMs, 2), 'ratio to floor': round(readyMs / floorMs, 2) },
      { measure: 'idle RSS MB, 3 s after ready', agent: round(agentRss, 1), bare: round(bareRss, 1), 'dependency floor': round(floorRss, 1), ratio: round(agentRss / bareRss, 2), 'ratio to floor': round(agentRss / floorRss, 2) },
    ],
  );
}
