/**
 * Every `{Code, Message}` the agent can answer, listed once. The README documents each code;
 * test/errors.test.ts fails when one is missing there.
 */
export const ERROR_CATALOG = {
  // The request itself
  ForbiddenHost: { status: 403, retryable: false, description: 'Host header names none of the agent\'s bind hosts' },
  NotFound: { status: 404, retryable: false, description: 'path other than /v1/credentials' },
  MethodNotAllowed: { status: 405, retryable: false, description: 'method other than GET' },
  // Token checks done locally, before any upstream call
  MissingToken: { status: 400, retryable: false, description: 'Authorization header missing or empty' },
  TokenTooLarge: { status: 400, retryable: false, description: 'token longer than 16 KiB' },
  MalformedToken: { status: 400, retryable: false, description: 'not three base64url segments with a JSON header and payload' },
  InvalidAudience: { status: 400, retryable: false, description: 'aud does not contain the expected audience' },
  TokenExpired: { status: 400, retryable: false, description: 'exp is in the past (60 s skew allowed)' },
  TokenNotYetValid: { status: 400, retryable: false, description: 'nbf is in the future (60 s skew allowed)' },
  // Local verification (--token-verification) and pod binding (--pod-binding)
  TokenSignatureInvalid: { status: 401, retryable: false, description: 'the token is not signed by the cluster\'s service-account issuer' },
  TokenIssuerMismatch: { status: 401, retryable: false, description: 'iss is not the cluster\'s service-account issuer' },
  TokenClaimsInvalid: { status: 400, retryable: false, description: 'the kubernetes.io claims (namespace, service account, pod name and uid) are missing or malformed' },
  TokenNotAuthenticated: { status: 401, retryable: false, description: 'the API server\'s TokenReview did not authenticate the token' },
  TokenKeysUnavailable: { status: 503, retryable: true, description: 'no signing keys of the cluster are known yet (API server unreachable since start)' },
  TokenReviewUnavailable: { status: 503, retryable: true, description: 'the API server could not be asked to review the token' },
  PodNotOnNode: { status: 403, retryable: false, description: 'the token\'s pod is not a pod on this node' },
  SourceAddressMismatch: { status: 403, retryable: false, description: 'the request does not come from the token\'s pod' },
  PodListUnavailable: { status: 503, retryable: true, description: 'the list of this node\'s pods has not been read yet' },
  TooManyRequests: { status: 429, retryable: true, description: 'too many misses needing the upstream from one pod address, or from the whole node (Retry-After says when to come back)' },
  AmbiguousRequest: { status: 400, retryable: false, description: 'more than one Host or Authorization header' },
  BadRequest: { status: 400, retryable: false, description: 'the request could not be parsed as HTTP' },
  HeadersTooLarge: { status: 431, retryable: false, description: 'the request headers exceed 32 KiB' },
  RequestTimeout: { status: 408, retryable: true, description: 'the request headers or body did not arrive in time' },
  // The upstream call (EKS Auth, or STS with --upstream sts)
  UpstreamUnavailable: { status: 503, retryable: true, description: 'the upstream (EKS Auth or STS) unreachable or timed out within the retry budget' },
  UpstreamInvalidResponse: { status: 502, retryable: true, description: 'the upstream answered something that is not a valid response' },
  UpstreamCredentialsExpired: { status: 502, retryable: true, description: 'the upstream answered credentials with less than the minimum lifetime left' },
  NodeCredentialsUnavailable: { status: 503, retryable: true, description: 'the node\'s own AWS credentials could not be resolved (or STS refused them as expired)' },
  AssociationsUnavailable: { status: 503, retryable: true, description: '--upstream sts: the associations ConfigMap has not been read yet, and no association found so far matches' },
  InternalError: { status: 500, retryable: true, description: 'unexpected failure inside the agent' },
} as const satisfies Record<string, { status: number; retryable: boolean; description: string }>;

export type AgentErrorCode = keyof typeof ERROR_CATALOG;

/**
 * EKS Auth error names passed through with their status. Names outside this table are passed
 * through too (sanitised); this table documents what the agent expects and how it treats each.
 */
export const UPSTREAM_ERRORS = {
  AccessDeniedException: { status: 400, retryable: false },
  ExpiredTokenException: { status: 400, retryable: false },
  InvalidTokenException: { status: 400, retryable: false },
  InvalidParameterException: { status: 400, retryable: false },
  InvalidRequestException: { status: 400, retryable: false },
  ResourceNotFoundException: { status: 404, retryable: false },
  ThrottlingException: { status: 429, retryable: true },
  InternalServerException: { status: 500, retryable: true },
  ServiceUnavailableException: { status: 503, retryable: true },
} as const satisfies Record<string, { status: number; retryable: boolean }>;

export interface AgentErrorOptions {
  readonly retryable?: boolean;
  /** Sent as Retry-After. */
  readonly retryAfterSeconds?: number;
  readonly upstreamRequestId?: string;
  /** What the upstream said, for the operator's log only: it may name the agent's own identity. */
  readonly detail?: string;
  /** The upstream refused the node's own credentials (signature, keys, permission), not the pod's token. */
  readonly nodeCredentialsRejected?: boolean;
  readonly cause?: unknown;
}

/** An error the agent answers to the pod as `{Code, Message}` with `status`. */
export class AgentError extends Error {
  readonly code: string;
  readonly status: number;
  /** Whether trying again later can succeed (throttling, 5xx, network), as opposed to a verdict on the token. */
  readonly retryable: boolean;
  readonly upstreamRequestId: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  /** Logged, never answered to the pod. */
  readonly detail: string | undefined;
  /** The node's credentials were refused: /readyz turns not ready until a call succeeds again. */
  readonly nodeCredentialsRejected: boolean;

  constructor(code: string, status: number, message: string, options: AgentErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AgentError';
    this.code = code;
    this.status = status;
    this.retryable = options.retryable ?? status >= 500;
    this.upstreamRequestId = options.upstreamRequestId;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.detail = options.detail;
    this.nodeCredentialsRejected = options.nodeCredentialsRejected ?? false;
  }

  toJSON(): { Code: string; Message: string } {
    return { Code: this.code, Message: this.message };
  }
}

/** An error from the agent's own catalog. */
export function agentError(code: AgentErrorCode, message: string, options: AgentErrorOptions = {}): AgentError {
  const entry = ERROR_CATALOG[code];
  return new AgentError(code, entry.status, message, { retryable: entry.retryable, ...options });
}

export function isAgentError(value: unknown): value is AgentError {
  return value instanceof AgentError;
}
