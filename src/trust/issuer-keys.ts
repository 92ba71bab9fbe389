import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import type { JSONWebKeySet } from 'jose';
import type { Logger } from 'pino';
import { apiCall } from '../k8s/api-request.ts';

/** The cluster's service-account issuer and its signing keys, as last read. */
export interface IssuerKeySet {
  readonly issuer: string;
  readonly jwks: JSONWebKeySet;
  /** Epoch ms. */
  readonly fetchedAt: number;
}

export interface IssuerKeysOptions {
  readonly kubeConfig: KubeConfig;
  readonly stateDir: string;
  readonly logger: Logger;
  /** Least time between two reloads asked for by an unknown kid. */
  readonly cooldownMs?: number;
  readonly refreshIntervalMs?: number;
}

export interface IssuerKeys {
  current(): IssuerKeySet | undefined;
  /** Reloads unless one ran within the cooldown; resolves to whether the set changed. */
  refreshForUnknownKid(): Promise<boolean>;
  /** First load: from the API server within `timeoutMs`, else from the state directory. */
  start(timeoutMs: number): Promise<IssuerKeySet | undefined>;
  close(): void;
}

const STATE_FILE = 'issuer-keys.json';

/**
 * Discovery (`/.well-known/openid-configuration`) for the issuer, `/openid/v1/jwks` for the keys,
 * both from the API server. Reloaded periodically and when a token names an unknown kid (at most
 * once per cooldown); a sequence number keeps a slow old reload from overwriting a newer one. The
 * last good set is written to the state directory (0700, atomic rename) so that a restart during
 * an API-server outage still verifies.
 */
export function issuerKeys(options: IssuerKeysOptions): IssuerKeys {
  const cooldownMs = options.cooldownMs ?? 10_000;
  let keys: IssuerKeySet | undefined;
  let started = 0;
  let applied = 0;
  let lastUnknownKidReload = Number.NEGATIVE_INFINITY;
  let timer: NodeJS.Timeout | undefined;

  async function load(): Promise<boolean> {
    const sequence = ++started;
    const discovery = await apiCall<{ issuer?: unknown }>(options.kubeConfig, { path: '/.well-known/openid-configuration' });
    const jwks = await apiCall<JSONWebKeySet>(options.kubeConfig, { path: '/openid/v1/jwks', accept: 'application/jwk-set+json' });
    if (typeof discovery.issuer !== 'string' || !Array.isArray(jwks.keys)) throw new Error('the API server\'s issuer discovery or key set is malformed');
    if (sequence < applied) return false;
    applied = sequence;
    const changed = JSON.stringify(keys?.jwks) !== JSON.stringify(jwks) || keys?.issuer !== discovery.issuer;
    keys = { issuer: discovery.issuer, jwks, fetchedAt: Date.now() };
    if (changed) await persist(options.stateDir, keys).catch((error: unknown) => options.logger.warn({ error: (error as Error).message }, 'could not store the issuer keys'));
    return changed;
  }

  async function reload(reason: string): Promise<boolean> {
    try {
      const changed = await load();
      if (changed) options.logger.info({ issuer: keys?.issuer, keys: keys?.jwks.keys.length, reason }, 'service-account issuer keys loaded');
      return changed;
    } catch (error) {
      options.logger.warn({ error: (error as Error).message, reason }, 'could not read the service-account issuer keys; keeping the last good set');
      return false;
    }
  }

  return {
    current: () => keys,
    refreshForUnknownKid() {
      // Forged kids must not turn into a stream of API calls: one such reload per cooldown.
      if (Date.now() - lastUnknownKidReload < cooldownMs) return Promise.resolve(false);
      lastUnknownKidReload = Date.now();
      return reload('unknown kid');
    },
    async start(timeoutMs) {
      let timeout: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<false>((resolve) => {
        timeout = setTimeout(() => resolve(false), timeoutMs);
      });
      const loaded = await Promise.race([reload('start'), gaveUp]);
      clearTimeout(timeout);
      if (!loaded) {
        keys ??= await restore(options.stateDir);
        if (keys !== undefined) options.logger.warn({ issuer: keys.issuer, storedAt: new Date(keys.fetchedAt).toISOString() }, 'using the issuer keys stored by an earlier run');
      }
      timer = setInterval(() => void reload('periodic'), options.refreshIntervalMs ?? 10 * 60_000).unref();
      return keys;
    },
    close() {
      clearInterval(timer);
    },
  };
}

async function persist(dir: string, keys: IssuerKeySet): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temporary = join(dir, `${STATE_FILE}.${process.pid}.tmp`);
  await writeFile(temporary, JSON.stringify(keys), { mode: 0o600 });
  await rename(temporary, join(dir, STATE_FILE));
}

async function restore(dir: string): Promise<IssuerKeySet | undefined> {
  try {
    const stored = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')) as IssuerKeySet;
    return typeof stored.issuer === 'string' && Array.isArray(stored.jwks?.keys) ? stored : undefined;
  } catch {
    return undefined;
  }
}
