import { rename, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { type ProbeOptions, health, readiness } from './probe-handler.ts';

/** How often the file is rewritten; the DaemonSet's probes take it as stale after 30 s. */
const PROBE_FILE_INTERVAL_MS = 5_000;

export interface ProbeFile {
  close(): Promise<void>;
}

/**
 * The kubelet probes a host-network pod at the node's addresses, where during a surge rollout both
 * agents listen: an httpGet probe could ask the old agent whether the new one is ready. So each
 * agent writes what `/healthz` and `/readyz` would answer to a file in its own pod's volume, and an
 * exec probe reads it with bash builtins only (no Node.js start per probe; daemonset/README.md, "Upgrades: surge rollouts on a shared port").
 * First line: `<live 0|1> <ready 0|1> <unix seconds>`; then the readiness report as JSON, for people.
 * Written to a temporary name and renamed, so a probe never reads half a file.
 */
export function writeProbeFile(path: string, options: ProbeOptions, logger: Logger, intervalMs = PROBE_FILE_INTERVAL_MS): ProbeFile {
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let failed = false;
  let written = 0;
  const tick = async (): Promise<void> => {
    const live = health(options.eventLoop);
    const ready = await readiness(options);
    const text = `${live.healthy ? 1 : 0} ${ready.ready ? 1 : 0} ${Math.floor(Date.now() / 1000)}\n${JSON.stringify({ status: live.status, ...ready })}\n`;
    try {
      // A name per write: close()'s last write may overlap the loop's.
      const temporary = `${path}.${written++}.tmp`;
      await writeFile(temporary, text, { mode: 0o644 });
      await rename(temporary, path);
      failed = false;
    } catch (error) {
      // Once per run of failures: the probes fail on a stale file and say nothing themselves.
      if (!failed) logger.error({ err: error, path }, 'cannot write the probe file: the exec probes will fail');
      failed = true;
    }
  };
  const loop = (): void => {
    void tick().finally(() => {
      if (!closed) timer = setTimeout(loop, intervalMs);
    });
  };
  loop();
  return {
    async close() {
      closed = true;
      clearTimeout(timer);
      // The last word: not ready (draining), so a probe between now and exit does not pass.
      await tick();
    },
  };
}
