import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Relative to the proc sysctl root: per network namespace, so the host network's own (kernel 5.14+). */
export const MIGRATE_REQ = 'net/ipv4/tcp_migrate_req';
/** The same, as sysctl(8) and the log lines name it. */
export const MIGRATE_REQ_SETTING = MIGRATE_REQ.replaceAll('/', '.');

/** `set` carries the value it replaced, which `initialize --remove` puts back. */
export type MigrateOutcome = 'unchanged' | { readonly set: string } | { readonly unavailable: string };

/**
 * net.ipv4.tcp_migrate_req = 1: when a SO_REUSEPORT listener closes, the connections in its accept
 * queue (and its half-open requests) move to another listener of the same group instead of being
 * reset. During a surge rollout that is the old agent handing its queue to the new one (README,
 * "Upgrades"). Every reuseport group in the host network gets the same; without another listener in
 * the group nothing changes. Written only when it is not 1 already. A kernel without it, or a
 * read-only root, is reported, not thrown: the agent still serves, and a handover may reset the few
 * connections queued at that instant.
 */
export async function ensureMigrateReq(procSys: string): Promise<MigrateOutcome> {
  const path = join(procSys, MIGRATE_REQ);
  try {
    const prior = (await readFile(path, 'utf8')).trim();
    if (prior === '1') return 'unchanged';
    await writeFile(path, '1\n');
    return { set: prior };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'this kernel has no tcp_migrate_req (5.14+)' : `${path}: ${code ?? (error as Error).message}`;
    return { unavailable: why };
  }
}

/**
 * Puts back the value `initialize` replaced, if the sysctl still holds the 1 it wrote (a value an
 * operator set since is theirs). Returns whether it wrote.
 */
export async function restoreMigrateReq(procSys: string, value: string): Promise<boolean> {
  const path = join(procSys, MIGRATE_REQ);
  if ((await readFile(path, 'utf8')).trim() !== '1') return false;
  await writeFile(path, `${value}\n`);
  return true;
}
