import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface MonitorOptions {
  /** The command, e.g. `['ip', '-o', 'monitor', 'link']`: run directly, never through a shell. */
  readonly command: readonly [string, ...string[]];
  /** Which output lines are events worth a check (the rest of the node's churn is ignored). */
  readonly relevant: (line: string) => boolean;
  /** A relevant line, or `restarted` after the child was replaced (events may have been missed meanwhile). */
  readonly onEvent: (event: string) => void;
  /** The child exited or could not start; it is started again after a delay. */
  readonly onProblem: (message: string, fields: Record<string, unknown>) => void;
  /** The first restart delay; doubled after each quick exit, up to maxRestartDelayMs. */
  readonly restartDelayMs?: number;
  readonly maxRestartDelayMs?: number;
}

export interface Monitor {
  readonly description: string;
  /** Ends the child (SIGTERM) and resolves once it has gone; no restart after this. */
  stop(): Promise<void>;
}

/**
 * A long-lived event source (`ip monitor`, `nft monitor`): the kernel tells these tools about every
 * change over netlink, so the watcher learns of a removal within milliseconds and costs nothing while
 * nothing happens. Both tools flush each event line as it happens (checked with their output piped).
 */
export function startMonitor(options: MonitorOptions): Monitor {
  const [tool, ...args] = options.command;
  const description = options.command.join(' ');
  const firstDelay = options.restartDelayMs ?? 1000;
  const maxDelay = options.maxRestartDelayMs ?? 60_000;
  let delay = firstDelay;
  let stopped = false;
  let restartTimer: NodeJS.Timeout | undefined;
  let current: { kill: () => void; gone: Promise<void> } | undefined;

  const start = (restarted: boolean) => {
    const startedAt = Date.now();
    const child = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    // Keep the end of stderr only: it explains an exit, and a chatty tool must not grow it.
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-500)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (options.relevant(line)) options.onEvent(line.trim());
    });
    const gone = new Promise<void>((resolve) => {
      let ended = false;
      const end = (problem: Record<string, unknown>) => {
        if (ended) return;
        ended = true;
        resolve();
        if (stopped) return;
        // A child that ran for a while is restarted promptly; one that keeps failing, ever more slowly.
        const wait = Date.now() - startedAt > maxDelay ? firstDelay : delay;
        delay = Math.min(wait * 2, maxDelay);
        options.onProblem(`${description} ended; starting it again`, { ...problem, stderr: stderr.trim(), restartInMs: wait });
        restartTimer = setTimeout(() => start(true), wait);
      };
      child.on('error', (error) => end({ error: error.message }));
      child.on('close', (code, signal) => end({ code, signal }));
    });
    current = { kill: () => child.kill('SIGTERM'), gone };
    if (restarted) options.onEvent('restarted');
  };

  start(false);
  return {
    description,
    async stop() {
      stopped = true;
      clearTimeout(restartTimer);
      current?.kill();
      await current?.gone;
    },
  };
}
