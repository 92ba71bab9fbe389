import { handOver, resetHandover } from './handover.ts';
import { IPV4_ADDRESS, type InitializeOptions, LINK_NAME, applySetup, initialize } from './initialize.ts';
import { type Monitor, startMonitor } from './monitor.ts';
import { TABLE } from './port-redirect.ts';

export interface WatchOptions extends InitializeOptions {
  /** Aborted on SIGTERM/SIGINT: the watcher stops (and, with handoverDir, hands over). */
  readonly signal: AbortSignal;
  /** The directory shared with the agent's preStop hook, for the hand-over (handover.ts); undefined: none. */
  readonly handoverDir?: string | undefined;
  /** How often a missing redirect waits for the agent's port to answer. */
  readonly agentPollMs?: number;
  /** The backstop check, for a change no monitor reported (or one made while a monitor restarted). */
  readonly pollIntervalMs?: number;
  /** Events closer together than this are one check: a flush or a link deletion is dozens of lines. */
  readonly debounceMs?: number;
}

const DEFAULT_POLL_MS = 60_000;
const DEFAULT_DEBOUNCE_MS = 250;
const FIRST_RETRY_MS = 2000;
const DEFAULT_AGENT_POLL_MS = 250;

/**
 * `initialize --watch`: the set-up once, as `initialize` does (a failure there is the command's
 * failure), then kept in place until the signal: every change the kernel reports on pod-id-link0
 * (`ip monitor`) or to the agent's nftables table (`nft monitor destroy tables`) starts a check, debounced,
 * and a slow poll backs them up. A check is `initialize`'s own idempotent pass, so it changes only
 * what is missing; each repair is one log line naming what was re-applied. The redirect is installed
 * (and re-installed) only while its port answers: until then a check runs every agentPollMs. On the
 * signal, with handoverDir, the hand-over (handover.ts) decides whether the redirect stays.
 */
export async function watch(options: WatchOptions): Promise<void> {
  if (options.handoverDir !== undefined) await resetHandover(options.handoverDir);
  const first = await initialize(options, true);
  if (options.signal.aborted) return;
  const pollMs = options.pollIntervalMs ?? DEFAULT_POLL_MS;
  const checks = scheduleChecks(options, pollMs, options.debounceMs ?? DEFAULT_DEBOUNCE_MS, first.waitingForAgent);
  if (first.waitingForAgent) checks.request('waiting for the agent');
  const monitors: Monitor[] = [];
  const monitor = (command: readonly [string, ...string[]], relevant: (line: string) => boolean) =>
    monitors.push(
      startMonitor({
        command,
        relevant,
        onEvent: (event) => checks.request(`${command[0]}: ${event}`),
        onProblem: (message, fields) => options.log('warn', message, fields),
      }),
    );
  // Address and route lines name the device; so do link lines, the peer's included.
  monitor(['ip', '-o', 'monitor', 'link', 'address', 'route'], (line) => line.includes(LINK_NAME));
  // Table removals only (`delete table`, `flush ruleset`): rule events would wake nft for every rule
  // kube-proxy or Calico rewrite (measured: 3x its CPU on 5,000-rule nat restores). A chain or rule
  // deleted inside our table is left to the poll.
  if (options.redirectPort !== undefined) monitor(['nft', 'monitor', 'destroy', 'tables'], (line) => line.includes(`table inet ${TABLE}`));
  const poll = setInterval(() => checks.request('poll'), pollMs);
  options.log('info', "watching the node's set-up: repairing what other programs remove", {
    monitors: monitors.map((m) => m.description),
    pollIntervalMs: pollMs,
  });

  await new Promise<void>((resolve) => options.signal.addEventListener('abort', () => resolve(), { once: true }));
  const since = Date.now();
  clearInterval(poll);
  // Stopped first: the hand-over's removal must not be taken for damage and repaired.
  await Promise.all(monitors.map((m) => m.stop()));
  await checks.stop();
  if (options.handoverDir !== undefined && options.redirectPort !== undefined) {
    await handOver({ dir: options.handoverDir, port: options.redirectPort, since, log: options.log });
  } else options.log('info', 'stopped watching; the set-up stays in place');
}

interface Checks {
  request(trigger: string): void;
  /** No new checks; resolves when the one in flight (if any) has finished. */
  stop(): Promise<void>;
}

/** At most one check at a time; requests during one coalesce into one more; failures retry with backoff. */
function scheduleChecks(options: WatchOptions, pollMs: number, debounceMs: number, waitingAtStart: boolean): Checks {
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;
  let pending: { trigger: string; events: number } | undefined;
  let failures = 0;
  let stopped = false;
  // The redirect is wanted and its port unserved: checked every agentPollMs until it answers.
  let waiting = waitingAtStart;
  const agentPollMs = options.agentPollMs ?? DEFAULT_AGENT_POLL_MS;
  // A warning that holds on every pass (IPv6 disabled on the node) is logged once, not on every poll.
  const warned = new Set<string>();
  const passOptions: InitializeOptions = {
    ...options,
    log: (level, message, fields) => {
      if (level === 'warn' && warned.has(message)) return;
      if (level === 'warn') warned.add(message);
      options.log(level, message, fields);
    },
  };

  const arm = (delayMs: number) => {
    if (timer === undefined && !stopped) timer = setTimeout(run, delayMs);
  };
  const request = (trigger: string) => {
    if (stopped) return;
    pending = pending === undefined ? { trigger: trigger.slice(0, 200), events: 1 } : { ...pending, events: pending.events + 1 };
    if (inFlight === undefined) arm(debounceMs);
  };
  const run = () => {
    timer = undefined;
    const { trigger, events } = pending ?? { trigger: 'retry', events: 0 };
    pending = undefined;
    inFlight = check(trigger, events).finally(() => {
      inFlight = undefined;
      if (failures > 0) arm(Math.min(FIRST_RETRY_MS * 2 ** (failures - 1), pollMs));
      else if (pending !== undefined) arm(debounceMs);
      else if (waiting) arm(agentPollMs);
    });
  };
  const check = async (trigger: string, events: number) => {
    const started = performance.now();
    const applied: string[] = [];
    try {
      const report = await applySetup(passOptions, (change) => applied.push(change));
      failures = 0;
      const tookMs = Math.round(performance.now() - started);
      const redirected = applied.some((change) => change.startsWith('redirect TCP port 80'));
      if (report.waitingForAgent && !waiting) {
        options.log('info', `the redirect waits for the agent: nothing answers on ${IPV4_ADDRESS}:${options.redirectPort} yet`, { trigger });
      }
      if (waiting && redirected) options.log('info', `the agent answers on port ${options.redirectPort}: redirected port 80 to it`, { changed: applied, trigger, tookMs });
      else if (applied.length > 0) options.log('info', "repaired the node's set-up", { repaired: applied, trigger, events, tookMs });
      waiting = report.waitingForAgent;
    } catch (error) {
      failures += 1;
      options.log('error', "could not repair the node's set-up; retrying", { repaired: applied, trigger, error: (error as Error).message, failures });
    }
  };
  return {
    request,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await inFlight;
    },
  };
}
