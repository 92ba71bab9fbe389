import type { LookupOutcome } from '../cache/credential-cache.ts';
import type { AgentError } from '../errors.ts';
import type { PodIdentity } from '../token/identity.ts';
import type { Logger } from './logger.ts';
import type { AgentMetrics } from './metrics.ts';

/** What one credentials request did, for its log line and metrics. Never holds the token or a credential. */
export interface RequestRecord {
  /** performance.now() at arrival. */
  readonly started: number;
  status: number;
  outcome: LookupOutcome | 'rejected';
  identity: PodIdentity | undefined;
  error: AgentError | undefined;
  upstreamRequestId: string | undefined;
}

/** Records a finished request; never throws. */
export type RequestRecorder = (record: RequestRecord) => void;

export function newRequestRecord(): RequestRecord {
  return { started: performance.now(), status: 0, outcome: 'rejected', identity: undefined, error: undefined, upstreamRequestId: undefined };
}

/** Metrics and the one log line per request; metric children are bound once per label value. */
export function createRequestRecorder(metrics: AgentMetrics, logger: Logger): RequestRecorder {
  const count = countRequests(metrics);
  return (request) => {
    const seconds = (performance.now() - request.started) / 1000;
    try {
      count(request, seconds);
      logRequest(logger, request, seconds);
    } catch (error) {
      // Bookkeeping must not fail the request, nor escape as an unhandled rejection.
      logger.error({ err: error }, 'recording a credential request failed');
    }
  };
}

function countRequests(metrics: AgentMetrics): (request: RequestRecord, seconds: number) => void {
  const responses = new Map<number, { inc(): void }>();
  const durations = new Map<string, { observe(seconds: number): void }>();
  const hit = metrics.cacheState.labels('hit');
  const miss = metrics.cacheState.labels('miss');
  return (request, seconds) => {
    let byStatus = responses.get(request.status);
    if (byStatus === undefined) responses.set(request.status, (byStatus = metrics.httpResponses.labels(String(request.status))));
    byStatus.inc();
    const outcome = request.status === 200 ? request.outcome : 'error';
    let byOutcome = durations.get(outcome);
    if (byOutcome === undefined) durations.set(outcome, (byOutcome = metrics.requestDuration.labels(outcome)));
    byOutcome.observe(seconds);
    if (request.outcome === 'hit' || request.outcome === 'stale') hit.inc();
    else if (request.outcome === 'miss' || request.outcome === 'coalesced') miss.inc();
    if (request.error !== undefined && request.outcome !== 'rejected') {
      metrics.cacheErrors.inc({ type: request.error.code, code: String(request.error.status) });
    }
  };
}

function logRequest(logger: Logger, request: RequestRecord, seconds: number): void {
  const fields = {
    namespace: request.identity?.namespace,
    serviceAccount: request.identity?.serviceAccount,
    pod: request.identity?.podName,
    status: request.status,
    cache: request.outcome,
    durationMs: Math.round(seconds * 1e6) / 1000,
    upstreamRequestId: request.upstreamRequestId,
    code: request.error?.code,
    message: request.error?.message,
    detail: request.error?.detail,
  };
  // A bug is worth its stack trace; the pod got a bare InternalError.
  if (request.error?.code === 'InternalError') logger.error({ ...fields, err: request.error.cause }, 'credential request failed inside the agent');
  else if (request.status >= 500) logger.warn(fields, 'credential request failed');
  else logger.info(fields, 'credential request');
}
