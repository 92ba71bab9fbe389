import { type InitializeOptions, LINK_NAME, applySetup, initialize } from './initialize.ts';
import { type Monitor, startMonitor } from './monitor.ts';
import { TABLE } from './port-redirect.ts';

export interface WatchOptions extends InitializeOptions {
  /** Aborted on SIGTERM/SIGINT: the watcher stops and leaves the set-up in place. */
  readonly signal: AbortSignal;
  /** The backstop check, for a change no monitor reported (or one made while a monitor restarted). */
  readonly pollIntervalMs?: number;
  /** Events closer together than this are one check: a flush or a link deletion is dozens of lines. */
  readonly debounceMs?: number;
}

const DEFAULT_POLL_MS = 60_000;
const DEFAULT_DEBOUNCE_MS = 250;
const FIRST_RETRY_MS = 2000;

/**
 * `initialize --watch`: the set-up once, as `initialize` does (a failure there is the command's
 * failure), then kept in place until the signal: every change the kernel reports on pod-id-link0
 * (`ip monitor`) or to the agent's nftables table (`nft monitor destroy tables`) starts a check, debounced,
 * and a slow poll backs them up. A check is `initialize`'s own idempotent pass, so it changes only
 * what is missing; each repair is one log line naming what was re-applied.
 */
export async function watch(options: WatchOptions): Promise<void> {
  await initialize(options);
  if (options.signal.aborted) return;
  const pollMs = options.pollIntervalMs ?? DEFAULT_POLL_MS;
  const checks = scheduleChecks(options, pollMs, options.debounceMs ?? DEFAULT_DEBOUNCE_MS);
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
  clearInterval(poll);
  await Promise.all(monitors.map((m) => m.stop()));
  await checks.stop();
}

interface Checks {
  request(trigger: string): void;
  /** No new checks; resolves when the one in flight (if any) has finished. */
  stop(): Promise<void>;
}

/** At most one check at a time; requests during one coalesce into one more; failures retry with backoff. */
function scheduleChecks(options: InitializeOptions, pollMs: number, debounceMs: number): Checks {
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;
  let pending: { trigger: string; events: number } | undefined;
  let failures = 0;
  let stopped = false;
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
    });
  };
  const check = async (trigger: string, events: number) => {
    const started = performance.now();
    const applied: string[] = [];
    try {
      await applySetup(passOptions, (change) => applied.push(change));
      failures = 0;
      const tookMs = Math.round(performance.now() - started);
      if (applied.length > 0) options.log('info', "repaired the node's set-up", { repaired: applied, trigger, events, tookMs });
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
