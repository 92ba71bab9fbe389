// Shared plumbing for the benchmarks: processes, load, reports. Servers under test run in child
// processes of their own and the load comes from yet another, so no two share an event loop.
// BENCH_SERVER_NODE_OPTIONS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") goes to the servers under test.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { request } from 'undici';
import { listeningSockets } from '../src/netsetup/listeners.ts';
import { type EmulatedCluster, startEmulatedCluster } from '../test/emulator/emulated-cluster.ts';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
export const NODE = process.execPath;

/**
 * The V8 limits the container image runs the agent with (Dockerfile, ENV NODE_OPTIONS): without them
 * the young generation alone grows to 128 MB under load. test/dockerfile.test.ts keeps the two equal.
 */
export const IMAGE_NODE_OPTIONS = '--max-semi-space-size=4 --max-old-space-size=128';

/**
 * The image's malloc setting (Dockerfile, ENV MALLOC_ARENA_MAX): one glibc arena for all threads, so
 * that V8's worker threads do not each keep an arena of freed memory resident (bench/README.md,
 * memory). Every process of a benchmark runs with it, the baselines too, to compare like for like.
 */
export const IMAGE_MALLOC_ARENA_MAX = '1';

/**
 * What a server under test runs with: the image's NODE_OPTIONS and malloc setting, plus
 * BENCH_SERVER_NODE_OPTIONS (a profiler, say) unless `profiled` is false.
 */
export function runtimeEnv(profiled = true): Record<string, string> {
  const extra = profiled ? (process.env.BENCH_SERVER_NODE_OPTIONS ?? '') : '';
  return { PATH: process.env.PATH ?? '', MALLOC_ARENA_MAX: IMAGE_MALLOC_ARENA_MAX, NODE_OPTIONS: `${IMAGE_NODE_OPTIONS} ${extra}`.trim() };
}

/**
 * The image's compile cache (Dockerfile: NODE_COMPILE_CACHE, made by one `compile-cache` run with
 * the image's NODE_OPTIONS), made the same way once per benchmark run, so each agent starts as the image's does.
 */
let compileCache: string | undefined;
export function imageEnv(): Record<string, string> {
  const env = runtimeEnv();
  if (compileCache === undefined) {
    compileCache = mkdtempSync(join(tmpdir(), 'pia-compile-cache-'));
    execFileSync(NODE, [`${ROOT}dist/cli.js`, 'compile-cache'], { env: { ...env, NODE_COMPILE_CACHE: compileCache }, stdio: 'ignore' });
  }
  // BENCH_NO_COMPILE_CACHE=1 measures what the cache buys.
  return process.env.BENCH_NO_COMPILE_CACHE === '1' ? env : { ...env, NODE_COMPILE_CACHE: compileCache };
}

export async function startCluster(options: { credentialLifetimeSeconds?: number } = {}): Promise<EmulatedCluster> {
  const associations = [{ namespace: 'bench', serviceAccount: 'app', roleArn: 'arn:aws:iam::111122223333:role/bench' }];
  return startEmulatedCluster({ clusterName: 'bench', associations, ...options });
}

export async function issueTokens(cluster: EmulatedCluster, count: number): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < count; i += 1) tokens.push(await cluster.issuer.issue({ namespace: 'bench', serviceAccount: 'app', podName: `pod-${i}` }));
  return tokens;
}

export interface AgentProcess {
  readonly child: ChildProcess;
  readonly url: string;
  readonly metricsUrl: string;
  stop(): Promise<void>;
}

/** What startAgent reads of a cluster: an emulator in this process (EmulatedCluster) or in its own (EmulatorProcess). */
export type AgentUpstream = Pick<EmulatedCluster, 'clusterName' | 'region' | 'nodeCredentials'> & { readonly emulator: { readonly url: string } };

/**
 * The bundled CLI, exactly as the image runs it (its NODE_OPTIONS and compile cache), logging at info
 * to /dev/null. Every port is 0: the system picks free ones and keeps them, and they are read back
 * from the process's listening sockets (its log goes to /dev/null, and says nothing at -v warn).
 */
export async function startAgent(cluster: AgentUpstream, extraArgs: string[] = []): Promise<AgentProcess> {
  const devNull = openSync('/dev/null', 'w');
  // One load process stands for many pods: lift the per-address miss budget, or it would be measured instead.
  const args = ['--max-client-miss-qps', '100000', '--max-client-miss-burst', '100000', '--cluster-name', cluster.clusterName, '--region', cluster.region, '--endpoint', cluster.emulator.url, '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--metrics-address', '127.0.0.1', '--metrics-port', '0', ...extraArgs];
  const child = spawn(NODE, [`${ROOT}dist/cli.js`, 'server', ...args], {
    stdio: ['ignore', devNull, 'inherit'],
    env: { ...imageEnv(), AWS_ACCESS_KEY_ID: cluster.nodeCredentials.accessKeyId, AWS_SECRET_ACCESS_KEY: cluster.nodeCredentials.secretAccessKey },
  });
  const { credentials, probe, metrics } = await agentPorts(child);
  await waitUntilUp(`http://127.0.0.1:${probe}/healthz`);
  return { child, url: `http://127.0.0.1:${credentials}/v1/credentials`, metricsUrl: `http://127.0.0.1:${metrics}/metrics`, stop: () => stop(child) };
}

export interface EmulatorStats {
  readonly calls: number;
  readonly ok: number;
  readonly cpuSeconds: number;
  /** Since the previous stats(): each call's time inside the emulator (arrival to answer, the injected latency included). */
  readonly handledP50Ms: number;
  readonly handledP99Ms: number;
  /** Since the previous stats(): when the first and the last call arrived, epoch ms. */
  readonly firstArrival: number;
  readonly lastArrival: number;
}

export interface EmulatorProcess extends AgentUpstream {
  readonly child: ChildProcess;
  /** Tokens for bench/app, pods pod-0 to pod-(count-1), issued by the emulator process's own key. */
  readonly tokens: readonly string[];
  /** Every later EKS Auth call waits `ms` before it is checked and answered. */
  setLatency(ms: number): Promise<void>;
  /** Calls the emulator has handled (and how many answered 200), the CPU its process has used, and timings. */
  stats(): Promise<EmulatorStats>;
  stop(): Promise<void>;
}

/**
 * The EKS Auth emulator in a child process of its own (bench/emulator-process.ts), so that its SigV4
 * and token checks do not take the benchmark's event loop; it issues `tokenCount` tokens at start.
 */
export async function startEmulatorProcess(tokenCount: number): Promise<EmulatorProcess> {
  const tokenFile = join(mkdtempSync(join(tmpdir(), 'pia-emulator-')), 'tokens.json');
  const child = spawn(NODE, [`${ROOT}bench/emulator-process.ts`, String(tokenCount), tokenFile], { stdio: ['pipe', 'pipe', 'inherit'], env: { PATH: process.env.PATH ?? '' } });
  const pending: ((line: string) => void)[] = [];
  const first = new Promise<string>((resolve, reject) => {
    pending.push(resolve);
    child.once('exit', (code) => reject(new Error(`the emulator process exited with ${code}`)));
  });
  let text = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    for (let end = text.indexOf('\n'); end !== -1; end = text.indexOf('\n')) {
      const line = text.slice(0, end);
      text = text.slice(end + 1);
      pending.shift()?.(line);
    }
  });
  const ask = (command: string) => new Promise<string>((resolve) => {
    pending.push(resolve);
    child.stdin!.write(`${command}\n`);
  });
  const ready = JSON.parse(await first) as Pick<EmulatorProcess, 'clusterName' | 'region' | 'nodeCredentials'> & { url: string };
  const tokens = JSON.parse(readFileSync(tokenFile, 'utf8')) as string[];
  rmSync(dirname(tokenFile), { recursive: true });
  return {
    child,
    clusterName: ready.clusterName,
    region: ready.region,
    nodeCredentials: ready.nodeCredentials,
    emulator: { url: ready.url },
    tokens,
    setLatency: async (ms) => void (await ask(`latency ${ms}`)),
    stats: async () => JSON.parse(await ask('stats')) as EmulatorStats,
    stop: () => stop(child),
  };
}

/** A bare node:http server answering a fixed body: the ceiling the agent is measured against. */
export function startBareServer(bodyBytes: number, delayMs = 0, serverOptions: Record<string, unknown> = {}): Promise<ScriptServer> {
  return startScriptServer(`${ROOT}bench/bare-server.js`, ['0', String(bodyBytes), String(delayMs), JSON.stringify(serverOptions)], runtimeEnv());
}

export interface ScriptServer {
  readonly child: ChildProcess;
  readonly url: string;
  stop(): Promise<void>;
}

/** A script that serves node:http and prints one line, `{"port":N}` (bench/bare-server.js, bench/dependency-floor.js). */
export async function startScriptServer(script: string, args: readonly string[], env: Record<string, string>): Promise<ScriptServer> {
  const child = spawn(NODE, [script, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
  const port = await new Promise<number>((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) resolve((JSON.parse(text.split('\n')[0]!) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  await waitUntilUp(`http://127.0.0.1:${port}/`);
  return { child, url: `http://127.0.0.1:${port}/v1/credentials`, stop: () => stop(child) };
}

/** The TCP ports process `pid` listens on (Linux /proc): its sockets' inodes among the listening ones of its namespace. */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = '';
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode !== undefined) inodes.add(inode);
  }
  return (await listeningSockets(`/proc/${pid}/net`)).filter((l) => inodes.has(l.inode)).map((l) => l.port);
}

/** Which of the agent's three listeners is which: the probe answers /healthz, the metrics /metrics. */
async function agentPorts(child: ChildProcess): Promise<{ credentials: number; probe: number; metrics: number }> {
  for (let i = 0; i < 100; i += 1) {
    if (child.exitCode !== null) throw new Error(`the agent exited with ${child.exitCode}`);
    const ports = await listeningPorts(child.pid!);
    if (ports.length === 3) {
      const answers = async (port: number, path: string) => {
        try {
          const response = await request(`http://127.0.0.1:${port}${path}`, { headers: { host: '127.0.0.1' } });
          await response.body.dump();
          return response.statusCode === 200;
        } catch {
          return false;
        }
      };
      const probe = (await Promise.all(ports.map((port) => answers(port, '/healthz')))).indexOf(true);
      const metrics = (await Promise.all(ports.map((port) => answers(port, '/metrics')))).indexOf(true);
      const credentials = [0, 1, 2].find((index) => index !== probe && index !== metrics);
      if (probe !== -1 && metrics !== -1 && credentials !== undefined) return { credentials: ports[credentials]!, probe: ports[probe]!, metrics: ports[metrics]! };
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the agent did not come up');
}

async function waitUntilUp(url: string): Promise<void> {
  for (let i = 0; i < 100; i += 1) {
    try {
      const response = await request(url);
      await response.body.dump();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`${url} did not come up`);
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export interface LoadResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  readonly non2xx: number;
  readonly errors: number;
}

/** Seconds of CPU (user and system) a process has used, from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name; in clock ticks.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export function hasWrk(): boolean {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
    return true;
  } catch (error) {
    // wrk prints its version and exits 1.
    return (error as { status?: number }).status === 1;
  }
}

/**
 * wrk (Debian package `wrk`), a C load generator: on two cores it leaves the server most of one,
 * where a Node load generator takes a core of its own and flatters every ratio.
 */
export async function wrk(url: string, options: { connections: number; seconds: number; headers: Record<string, string> }): Promise<LoadResult> {
  const headerArgs = Object.entries(options.headers).flatMap(([name, value]) => ['-H', `${name}: ${value}`]);
  const { stdout } = await run('wrk', ['-t1', `-c${options.connections}`, `-d${options.seconds}s`, '--latency', ...headerArgs, url], { maxBuffer: 1024 * 1024 });
  const ms = (text: string | undefined) => (text === undefined ? Number.NaN : text.endsWith('us') ? Number.parseFloat(text) / 1000 : text.endsWith('ms') ? Number.parseFloat(text) : Number.parseFloat(text) * 1000);
  const requests = Number(/(\d+) requests in/.exec(stdout)?.[1]);
  return {
    requestsPerSecond: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1]),
    p50Ms: ms(/^\s+50%\s+(\S+)/m.exec(stdout)?.[1]),
    p99Ms: ms(/^\s+99%\s+(\S+)/m.exec(stdout)?.[1]),
    requests,
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0),
    errors: [...stdout.matchAll(/(connect|read|write|timeout) (\d+)/g)].reduce((sum, m) => sum + Number(m[2]), 0),
  };
}

/** autocannon in its own process. */
export async function autocannon(url: string, options: { connections: number; seconds: number; headers: Record<string, string> }): Promise<LoadResult> {
  const headerArgs = Object.entries(options.headers).flatMap(([name, value]) => ['-H', `${name}=${value}`]);
  const { stdout } = await run(NODE, [`${ROOT}node_modules/autocannon/autocannon.js`, '--json', '-c', String(options.connections), '-d', String(options.seconds), ...headerArgs, url], { maxBuffer: 64 * 1024 * 1024 });
  const result = JSON.parse(stdout) as { requests: { average: number; total: number }; latency: { p50: number; p99: number }; non2xx: number; errors: number };
  return { requestsPerSecond: result.requests.average, p50Ms: result.latency.p50, p99Ms: result.latency.p99, requests: result.requests.total, non2xx: result.non2xx, errors: result.errors };
}

/** Runs bench/burst-client.ts in its own process: every request at once, one per token in `tokens`. */
export async function burst(url: string, tokens: readonly string[], tokenFile: string): Promise<{ statuses: Record<string, number>; p50Ms: number; p99Ms: number; maxMs: number; clientCpuSeconds: number }> {
  const { writeFile } = await import('node:fs/promises');
  await writeFile(tokenFile, JSON.stringify(tokens));
  const { stdout } = await run(NODE, [`${ROOT}bench/burst-client.ts`, url, tokenFile], { maxBuffer: 64 * 1024 * 1024 });
  return JSON.parse(stdout);
}

export type BurstResult = Awaited<ReturnType<typeof burst>>;

/**
 * burst(), with `onOpened` run after the client has opened its connections and before it sends the
 * burst: what the server does in between (reading its CPU, say) excludes the connections' setup.
 */
export async function burstWithHandshake(url: string, tokens: readonly string[], tokenFile: string, onOpened: () => void): Promise<BurstResult> {
  const { writeFile } = await import('node:fs/promises');
  await writeFile(tokenFile, JSON.stringify(tokens));
  const child = spawn(NODE, [`${ROOT}bench/burst-client.ts`, url, tokenFile, '--handshake'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let text = '';
  let opened = false;
  child.stdout!.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    if (!opened && text.startsWith('opened\n')) {
      opened = true;
      text = text.slice('opened\n'.length);
      onOpened();
      child.stdin!.end('go\n');
    }
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`the burst client exited with ${code}`);
  return JSON.parse(text) as BurstResult;
}

export function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? Number.NaN : Number(match[1]) * 1024;
}

export async function scrape(metricsUrl: string): Promise<Map<string, number>> {
  const response = await request(metricsUrl);
  const samples = new Map<string, number>();
  for (const line of (await response.body.text()).split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/** One JSON line for machines, then a table for people. */
export function report(name: string, summary: Record<string, unknown>, rows: Record<string, string | number>[]): void {
  process.stdout.write(`${JSON.stringify({ benchmark: name, ...summary })}\n`);
  console.table(rows);
}

export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

export function round(value: number, digits = 2): number {
  return Math.round(value * 10 ** digits) / 10 ** digits;
}
