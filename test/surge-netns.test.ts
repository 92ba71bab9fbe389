import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { BASE_ENV, CLI } from './helpers/cli-process.ts';
import { NODE_CREDENTIALS } from './helpers/harness.ts';
import { type NamespacedProcess, canMakeNamespaces, inNamespace, makeNodeAndPod, startInNamespace } from './helpers/netns.ts';

// Issue #14: two agents on one node, same addresses and ports (SO_REUSEPORT), a pod requesting
// credentials without pause while the new one starts and the old one stops; then a version that
// cannot become ready starting beside the good one.
const HELPERS = new URL('./helpers/', import.meta.url).pathname;
const AGENT_PORT = '2704';
const unavailable = await canMakeNamespaces();

/** Polls until `holds()`, failing after `ms`: deadlines are generous (CI shares 2 cores), never asserted on. */
async function until(what: string, holds: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  for (const deadline = Date.now() + ms; !(await holds()); ) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const progress = (client: NamespacedProcess): number => Number(/progress (\d+)[^\n]*\n(?!.*progress)/s.exec(client.output())?.[1] ?? 0);
/** Some more requests answered, over every path: the client's loops keep running through the step. */
const more = async (client: NamespacedProcess, n = 200) => {
  const from = progress(client);
  await until(`${n} more requests`, () => progress(client) >= from + n);
};
const misses = (agent: NamespacedProcess): number => agent.output().split('\n').filter((line) => line.includes('"cache":"miss"')).length;
const probeLine = async (file: string): Promise<string> => (await readFile(file, 'utf8').catch(() => '')).split('\n')[0] ?? '';

t.test('surge rollout on a shared port: zero failed requests through the handover, and through a bad version', { skip: unavailable ?? false, timeout: 180_000 }, async (t) => {
  const { node, pod } = await makeNodeAndPod(`s${process.pid % 100_000}`, (cleanup) => t.teardown(cleanup));
  const dir = await mkdtemp(join(tmpdir(), 'pia-surge-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  // The init container, then again as it runs beside the old agent: the second run changes nothing.
  // tcp_migrate_req is per network namespace: this sets the test's node namespace only.
  const init = [CLI, 'initialize', `--redirect-port=${AGENT_PORT}`, '--proc-sys=/proc/sys'];
  t.match((await inNamespace(node, process.execPath, init, BASE_ENV)).stdout, /set net\.ipv4\.tcp_migrate_req = 1/);
  t.match((await inNamespace(node, process.execPath, init, BASE_ENV)).stdout, /nothing changed/, 'the second initialize changes nothing');

  const emulator = await startInNamespace(t, node, [`${HELPERS}netns-emulator.ts`, dir], BASE_ENV, (output) => output.includes('"url"'));
  const { url } = JSON.parse(emulator.output().split('\n').find((line) => line.includes('"url"')) as string) as { url: string };
  const signing = { ...BASE_ENV, AWS_REGION: 'us-west-2', AWS_ACCESS_KEY_ID: NODE_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: NODE_CREDENTIALS.secretAccessKey };
  // As the DaemonSet runs it: default bind hosts, the redirect, readiness through port 80, fixed probe and metrics ports.
  const agentArgs = (name: string) => [CLI, 'server', '--cluster-name', 'c1', '--endpoint', url, `--port=${AGENT_PORT}`, '--pod-port=80', '--probe-port=2703', '--metrics-port=2705', '--shutdown-timeout=5s', `--probe-file=${join(dir, `${name}.probe`)}`];
  const bound = (output: string) => output.includes('probes and metrics listening');

  const a = await startInNamespace(t, node, agentArgs('a'), signing, bound);
  await until('A ready (its probe file)', async () => (await probeLine(join(dir, 'a.probe'))).startsWith('1 1 '));
  await writeFile(join(dir, 'token'), await readFile(join(dir, 'token-app')));
  const client = await startInNamespace(t, pod, [`${HELPERS}surge-client.ts`, join(dir, 'token')], BASE_ENV, (output) => output.includes('started'));
  await more(client);
  t.equal(misses(a), 1, 'A: one exchange for the one identity');

  // B starts beside A on the same ports; A stops once B is ready, as the DaemonSet controller does it.
  const b = await startInNamespace(t, node, agentArgs('b'), signing, bound);
  await until('B ready (its own probe file, never A\'s)', async () => (await probeLine(join(dir, 'b.probe'))).startsWith('1 1 '));
  await more(client);
  a.child.kill('SIGTERM');
  t.equal(await a.exited, 0, 'A drains and exits 0');
  await more(client, 500);
  t.equal(misses(b), 1, 'B, cold: one exchange for the one identity, never more');
  const handover = { requests: progress(client), exchangesA: misses(a), exchangesB: misses(b) };

  // A bad version: no node credentials. It never binds what pods reach, is never ready, says why; B keeps serving.
  const bad = await startInNamespace(t, node, agentArgs('c'), { ...BASE_ENV, AWS_REGION: 'us-west-2' }, (output) => (output.match(/node credentials do not resolve/g) ?? []).length >= 2);
  t.notMatch(bad.output(), /serving credentials/, 'the bad version bound no credential listener');
  t.match(await probeLine(join(dir, 'c.probe')), /^1 0 \d+$/, 'live, not ready: the rollout stops at it');
  await more(client, 500);
  bad.child.kill('SIGTERM');
  t.equal(await bad.exited, 0, 'the bad version, stopped, exits 0');
  // And bad flags: exit 1 with one line saying why, nothing bound.
  const flags = await inNamespace(node, process.execPath, [...agentArgs('d'), '--max-cache-size=-1'], signing).then(() => undefined, (error: { code?: number; stderr?: string }) => error);
  t.equal(flags?.code, 1, 'bad flags: exit 1');
  t.match(flags?.stderr, /--max-cache-size/);
  await more(client);

  client.child.kill('SIGTERM');
  await client.exited;
  const counts = JSON.parse(client.output().split('\n').reverse().find((line) => line.startsWith('{')) as string) as { requests: number; failures: number; keepAliveRetries: number; byTarget: Record<string, number>; errors: string[] };
  t.comment(`surge: ${JSON.stringify({ ...counts, handover, exchangesDuringBadVersion: misses(b) - handover.exchangesB })}`);
  t.equal(counts.failures, 0, `no request refused, reset or failed (${counts.errors.join('; ')})`);
  t.equal(Object.keys(counts.byTarget).length, 4, 'IPv4 and IPv6, new connections and keep-alive');
  t.ok(Object.values(counts.byTarget).every((n) => n > 0));
});
