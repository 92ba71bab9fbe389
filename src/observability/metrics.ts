import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The agent's metrics, on a registry of its own so that several agents can live in one process. */
export interface AgentMetrics {
  readonly registry: Registry;
  /** The reference agent's series, kept by name and labels for existing dashboards. */
  readonly httpResponses: Counter<'code'>;
  readonly cacheState: Counter<'state'>;
  readonly cacheErrors: Counter<'type' | 'code'>;
  readonly cacheLookups: Counter<'outcome'>;
  readonly cacheRenewals: Counter<'outcome'>;
  readonly cacheEvictions: Counter<'reason'>;
  readonly cacheEntries: Gauge;
  /** Where the entries gauge reads its value at scrape time. */
  observeCacheSize(source: () => number): void;
  readonly upstreamDuration: Histogram<'code'>;
  readonly upstreamRetries: Counter<'code'>;
}

export function createMetrics(options: { readonly defaultMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry();
  let cacheSize: () => number = () => 0;
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpResponses: new Counter({
      name: 'pod_identity_http_response',
      help: 'Credential responses by HTTP status code (reference agent series)',
      labelNames: ['code'],
      registers: [registry],
    }),
    cacheState: new Counter({
      name: 'pod_identity_cache_state',
      help: 'Credential cache lookups by state: hit or miss (reference agent series)',
      labelNames: ['state'],
      registers: [registry],
    }),
    cacheErrors: new Counter({
      name: 'pod_identity_cache_errors',
      help: 'Failed credential fetches by error type and code (reference agent series)',
      labelNames: ['type', 'code'],
      registers: [registry],
    }),
    cacheLookups: new Counter({
      name: 'pod_identity_cache_lookups_total',
      help: 'Credential cache look-ups by outcome: hit, miss, coalesced (joined another request\'s upstream call), stale (served during an upstream failure), negative (remembered upstream verdict)',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    cacheRenewals: new Counter({
      name: 'pod_identity_cache_renewals_total',
      help: 'Background renewals by outcome: renewed, failed (temporary, retried later), dropped (upstream verdict on the token)',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    cacheEvictions: new Counter({
      name: 'pod_identity_cache_evictions_total',
      help: 'Identities removed from the cache by reason: capacity, token_expired, idle, expired, rejected',
      labelNames: ['reason'],
      registers: [registry],
    }),
    cacheEntries: new Gauge({
      name: 'pod_identity_cache_entries',
      help: 'Identities in the credential cache',
      registers: [registry],
      collect() {
        this.set(cacheSize());
      },
    }),
    observeCacheSize(source) {
      cacheSize = source;
    },
    upstreamDuration: new Histogram({
      name: 'pod_identity_upstream_request_duration_seconds',
      help: 'EKS Auth call attempts by HTTP status (0: no answer)',
      labelNames: ['code'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    upstreamRetries: new Counter({
      name: 'pod_identity_upstream_retries_total',
      help: 'EKS Auth call attempts retried, by the error code that caused the retry',
      labelNames: ['code'],
      registers: [registry],
    }),
  };
}
