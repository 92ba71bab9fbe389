import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The agent's metrics, on a registry of its own so that several agents can live in one process. */
export interface AgentMetrics {
  readonly registry: Registry;
  /** The reference agent's series, kept by name and labels for existing dashboards. */
  readonly httpResponses: Counter<'code'>;
  readonly cacheState: Counter<'state'>;
  readonly cacheErrors: Counter<'type' | 'code'>;
  readonly upstreamDuration: Histogram<'code'>;
  readonly upstreamRetries: Counter<'code'>;
}

export function createMetrics(options: { readonly defaultMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry();
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
