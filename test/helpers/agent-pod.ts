// One pod of the agent's DaemonSet inside a test's "node" namespace, as the kubelet runs it: the
// `node-setup` watcher (`initialize --watch` with the manifest's flags, the handover directory a
// temporary one) and the agent; deleting it runs the manifest's own preStop hook (bash, against the
// agent's process) while the watcher gets SIGTERM, then SIGTERMs the agent once the hook returns.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { parse } from 'yaml';
import { BASE_ENV, CLI } from './cli-process.ts';
import { type NamespacedProcess, startInNamespace } from './netns.ts';

const run = promisify(execFile);
const MANIFEST = new URL('../../daemonset/base/daemonset.yaml', import.meta.url).pathname;

interface Container {
  name: string;
  args?: string[];
  lifecycle?: { preStop?: { exec?: { command?: string[] } } };
}

/** The agent's preStop script and node-setup's handover directory, as the base DaemonSet has them. */
async function manifest(): Promise<{ preStop: string; handoverDir: string }> {
  const containers = (parse(await readFile(MANIFEST, 'utf8')) as { spec: { template: { spec: { containers: Container[] } } } }).spec.template.spec.containers;
  const preStop = containers.find((c) => c.name === 'agent')?.lifecycle?.preStop?.exec?.command?.[2];
  const handoverDir = containers.find((c) => c.name === 'node-setup')?.args?.find((a) => a.startsWith('--handover-dir='))?.slice('--handover-dir='.length);
  if (preStop === undefined || handoverDir === undefined) throw new Error(`${MANIFEST}: no preStop hook on the agent, or no --handover-dir on node-setup`);
  return { preStop, handoverDir };
}

/** `initialize --watch` as node-setup runs it, its handover directory `dir`; resolved once it watches. */
export function startWatcher(t: Test, node: string, dir: string, port: number): Promise<NamespacedProcess> {
  const args = [CLI, 'initialize', '--watch', `--redirect-port=${port}`, '--proc-sys=/proc/sys', `--handover-dir=${dir}`];
  return startInNamespace(t, node, args, BASE_ENV, (output) => output.includes('watching the node'));
}

/** The manifest's preStop hook, run for the agent process `pid` (its /proc/1 in the container) and `dir`. */
export async function runPreStop(dir: string, pid: number): Promise<void> {
  const { preStop, handoverDir } = await manifest();
  await run('bash', ['-c', preStop.replaceAll(handoverDir, dir).replaceAll('/proc/1/', `/proc/${pid}/`)], { timeout: 30_000 });
}

export interface DeletedPod {
  /** What the watcher wrote to handed-over: removed, kept or failed. */
  readonly decision: string;
  readonly watcherExit: number | null;
  readonly agentExit: number | null;
}

/** Deletes the pod as the kubelet does: preStop and the watcher's SIGTERM at once, the agent's SIGTERM after its hook. */
export async function deletePod(pod: { watcher: NamespacedProcess; agent?: NamespacedProcess; dir: string }): Promise<DeletedPod> {
  const { watcher, agent, dir } = pod;
  pod.watcher.child.kill('SIGTERM');
  if (agent !== undefined) {
    await runPreStop(dir, agent.child.pid!);
    agent.child.kill('SIGTERM');
  }
  const [watcherExit, agentExit] = await Promise.all([watcher.exited, agent?.exited ?? null]);
  return { decision: (await readFile(join(dir, 'handed-over'), 'utf8')).trim(), watcherExit, agentExit };
}
