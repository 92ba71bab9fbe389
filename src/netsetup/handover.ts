import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { onAgentAddress } from './initialize.ts';
import { listeningSockets } from './listeners.ts';
import { releaseRedirect } from './port-redirect.ts';

/**
 * The files of the hand-over, in a directory the agent's container shares with the watcher's (an
 * emptyDir). The agent's preStop hook writes AGENT_FDS (`readlink /proc/1/fd/*`: its sockets'
 * inodes) then AGENT_STOPPING, and waits for DECIDED before the kubelet sends the agent SIGTERM.
 */
export const HANDOVER_FILES = { agentFds: 'agent-fds', agentStopping: 'agent-stopping', decided: 'handed-over' } as const;

/** How long the watcher waits for the agent's preStop (it is not running: crashed, restarting). */
const AGENT_WAIT_MS = 5000;
/** A preStop older than this before the watcher's SIGTERM was another one's (a liveness restart). */
const FRESH_MS = 10_000;

export interface HandoverOptions {
  readonly dir: string;
  readonly port: number;
  /** When the watcher got SIGTERM (Date.now()). */
  readonly since: number;
  readonly log: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

/** Clears what an earlier run of the watcher in this pod may have left. */
export async function resetHandover(dir: string): Promise<void> {
  await rm(join(dir, HANDOVER_FILES.decided), { force: true });
}

/**
 * On the watcher's SIGTERM, before the agent stops listening: if no other agent of this kind listens
 * on the agent's port, the redirect goes (only its rules: the link stays, so that a connection to
 * port 80 with nobody there is refused at once rather than timing out; so does the table, with the
 * rule that keeps connection tracking on, see releaseRedirect), and pods' new connections
 * reach whatever binds port 80 directly (the EKS add-on, during a switch back), while the agent still
 * answers those already sent to it. Another agent is another listening socket on the port in the
 * kernel's table (a surge rollout's other pod); this pod's agent is told apart by its sockets' inodes
 * from its preStop, so that a pod deleted before its agent bound (a bad version rolled back) never
 * takes the redirect from the agent still serving. Then DECIDED is written, whatever the outcome.
 */
export async function handOver(options: HandoverOptions): Promise<'removed' | 'kept' | 'failed'> {
  let outcome: 'removed' | 'kept' | 'failed' = 'failed';
  try {
    const own = await ownSockets(options);
    const others = (await listeningSockets()).filter(
      (l) => l.port === options.port && onAgentAddress(l) && !own.has(l.inode),
    );
    if (others.length > 0) {
      outcome = 'kept';
      options.log('info', `another agent listens on port ${options.port}: the redirect stays for it`, { otherListeners: others.length, ownListeners: own.size });
    } else {
      const removed = await releaseRedirect();
      outcome = 'removed';
      options.log('info', `no other agent listens on port ${options.port}: ${removed ? 'removed' : 'there was no'} redirect, so that new connections to port 80 reach whatever listens there itself`, {
        ownListeners: own.size,
      });
    }
  } catch (error) {
    options.log('error', 'could not decide the hand-over; the set-up stays (initialize --remove takes it off)', { error: (error as Error).message });
  }
  // Written by rename: the preStop hook tests for the name.
  const temporary = join(options.dir, `.${HANDOVER_FILES.decided}`);
  await writeFile(temporary, `${outcome}\n`);
  await rename(temporary, join(options.dir, HANDOVER_FILES.decided));
  return outcome;
}

/** The socket inodes of this pod's agent, from its preStop; none if it did not run in time. */
async function ownSockets(options: HandoverOptions): Promise<Set<string>> {
  const stopping = join(options.dir, HANDOVER_FILES.agentStopping);
  for (const deadline = Date.now() + AGENT_WAIT_MS; ; ) {
    const written = await stat(stopping).then((s) => s.mtimeMs, () => undefined);
    if (written !== undefined && written >= options.since - FRESH_MS) break;
    if (Date.now() > deadline) {
      options.log('warn', "this pod's agent did not report its sockets (not running?): every listener on its port counts as another agent's");
      return new Set();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const fds = await readFile(join(options.dir, HANDOVER_FILES.agentFds), 'utf8').catch(() => '');
  return new Set([...fds.matchAll(/socket:\[(\d+)\]/g)].map((match) => match[1]!));
}
