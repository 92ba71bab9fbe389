import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { deletePod, startWatcher } from './helpers/agent-pod.ts';
import { BASE_ENV, CLI } from './helpers/cli-process.ts';
import { NODE_CREDENTIALS } from './helpers/harness.ts';
import { type NamespacedProcess, canMakeNamespaces, inNamespace, makeNodeAndPod, startInNamespace } from './helpers/netns.ts';

// Issue #14: two agents on one node, same addresses and ports (SO_REUSEPORT), a pod requesting
// credentials without pause while the new one starts and the old one stops; then a version that
// cannot become ready starting beside the good one. Each pod as the DaemonSet runs it: the init
// step, the node-setup watcher (which redirects port 80 once the agent answers) and the agent; a
// pod goes as the kubelet deletes it (the agent's preStop hook while the watcher decides whether to
// hand over: it must not, with the other agent serving).
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
  const init = [CLI, 'initialize', '--proc-sys=/proc/sys'];
  t.match((await inNamespace(node, process.execPath, init, BASE_ENV)).stdout, /set net\.ipv4\.tcp_migrate_req = 1/);
  t.match((await inNamespace(node, process.execPath, init, BASE_ENV)).stdout, /nothing changed/, 'the second initialize changes nothing');
  const handoverDir = async (name: string) => {
    const path = join(dir, `${name}.handover`);
    await mkdir(path);
    return path;
  };

  const emulator = await startInNamespace(t, node, [`${HELPERS}netns-emulator.ts`, dir], BASE_ENV, (output) => output.includes('"url"'));
  const { url } = JSON.parse(emulator.output().split('\n').find((line) => line.includes('"url"')) as string) as { url: string };
  const signing = { ...BASE_ENV, AWS_REGION: 'us-west-2', AWS_ACCESS_KEY_ID: NODE_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: NODE_CREDENTIALS.secretAccessKey };
  // As the DaemonSet runs it: default bind hosts, the redirect, readiness through port 80, fixed probe and metrics ports.
  const agentArgs = (name: string) => [CLI, 'server', '--cluster-name', 'c1', '--endpoint', url, `--port=${AGENT_PORT}`, '--pod-port=80', '--probe-port=2703', '--metrics-port=2705', '--shutdown-timeout=5s', `--probe-file=${join(dir, `${name}.probe`)}`];
  const bound = (output: string) => output.includes('probes and metrics listening');

  const dirA = await handoverDir('a');
  const watcherA = await startWatcher(t, node, dirA, Number(AGENT_PORT));
  const a = await startInNamespace(t, node, agentArgs('a'), signing, bound);
  await until('A ready (its probe file)', async () => (await probeLine(join(dir, 'a.probe'))).startsWith('1 1 '));
  t.match(watcherA.output(), /redirected port 80 to it/, 'A\'s watcher redirected port 80 once A answered');
  await writeFile(join(dir, 'token'), await readFile(join(dir, 'token-app')));
  const client = await startInNamespace(t, pod, [`${HELPERS}surge-client.ts`, join(dir, 'token')], BASE_ENV, (output) => output.includes('started'));
  await more(client);
  t.equal(misses(a), 1, 'A: one exchange for the one identity');

  // B starts beside A on the same ports; A's pod goes once B is ready, as the DaemonSet controller does it.
  t.match((await inNamespace(node, process.execPath, init, BASE_ENV)).stdout, /nothing changed/, 'B\'s init step beside A changes nothing');
  const dirB = await handoverDir('b');
  const watcherB = await startWatcher(t, node, dirB, Number(AGENT_PORT));
  t.match(watcherB.output(), /nothing changed/, 'B\'s watcher finds the redirect in place: A answers');
  const b = await startInNamespace(t, node, agentArgs('b'), signing, bound);
  await until('B ready (its own probe file, never A\'s)', async () => (await probeLine(join(dir, 'b.probe'))).startsWith('1 1 '));
  await more(client);
  const deletedA = await deletePod({ watcher: watcherA, agent: a, dir: dirA });
  t.same(deletedA, { decision: 'kept', watcherExit: 0, agentExit: 0 }, 'A\'s watcher leaves the redirect to B; A drains and exits 0');
  t.match(watcherA.output(), /another agent listens on port 2704: the redirect stays for it/);
  await more(client, 500);
  t.equal(misses(b), 1, 'B, cold: one exchange for the one identity, never more');
  const handover = { requests: progress(client), exchangesA: misses(a), exchangesB: misses(b) };

  // A bad version: no node credentials. It never binds what pods reach, is never ready, says why; B keeps serving.
  const dirC = await handoverDir('c');
  const watcherC = await startWatcher(t, node, dirC, Number(AGENT_PORT));
  const bad = await startInNamespace(t, node, agentArgs('c'), { ...BASE_ENV, AWS_REGION: 'us-west-2' }, (output) => (output.match(/node credentials do not resolve/g) ?? []).length >= 2);
  t.notMatch(bad.output(), /serving credentials/, 'the bad version bound no credential listener');
  t.match(await probeLine(join(dir, 'c.probe')), /^1 0 \d+$/, 'live, not ready: the rollout stops at it');
  await more(client, 500);
  // Rolled back: its pod goes while B serves. Its agent never listened, so the one listener (B's) is another's.
  const deletedC = await deletePod({ watcher: watcherC, agent: bad, dir: dirC });
  t.same(deletedC, { decision: 'kept', watcherExit: 0, agentExit: 0 }, 'the bad version\'s watcher leaves the redirect to B; the bad version exits 0');
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
