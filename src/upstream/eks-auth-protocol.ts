import { AgentError, agentError } from '../errors.ts';
import type { ExchangeResult, PodCredentials } from './types.ts';

// Pure request building and response parsing for AssumeRoleForPodIdentity (rest-json, API 2023-11-26).

export interface UnsignedRequest {
  readonly method: 'POST';
  readonly protocol: string;
  readonly hostname: string;
  readonly port: number | undefined;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

export function buildAssumeRoleRequest(endpoint: URL, clusterName: string, token: string, userAgent: string): UnsignedRequest {
  const base = endpoint.pathname.replace(/\/+$/, '');
  return {
    method: 'POST',
    protocol: endpoint.protocol,
    hostname: endpoint.hostname,
    port: endpoint.port === '' ? undefined : Number(endpoint.port),
    path: `${base}/clusters/${encodeURIComponent(clusterName)}/assume-role-for-pod-identity`,
    headers: {
      host: endpoint.host,
      'content-type': 'application/json',
      'user-agent': userAgent,
    },
    body: JSON.stringify({ token }),
  };
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

const NAME = /^[A-Za-z][A-Za-z0-9]{0,63}$/;
const RETRYABLE_NAMES = new Set(['ThrottlingException', 'TooManyRequestsException', 'RequestLimitExceeded', 'InternalServerException', 'ServiceUnavailableException']);
// AWS's front end refusing the signature or the keys that made it: the node's credentials, never the pod's token.
const SIGNER_REFUSED = new Set(['UnrecognizedClientException', 'InvalidSignatureException', 'IncompleteSignatureException', 'MissingAuthenticationTokenException', 'InvalidClientTokenId', 'SignatureDoesNotMatch']);

/**
 * Whether EKS Auth refused the caller (the node's credentials or the node role's permission) rather
 * than the pod's token. ExpiredTokenException names both: EKS Auth's own (400) is about the service
 * account token; the front end's (403, "The security token included in the request is expired") is
 * about the node's session. AccessDeniedException is the node role's only when IAM says it lacks
 * eks-auth:AssumeRoleForPodIdentity: other denials stay a verdict on the pod.
 */
function refusesNode(code: string, status: number, message: string): boolean {
  if (SIGNER_REFUSED.has(code)) return true;
  if (code === 'ExpiredTokenException') return status === 403 || /security token/i.test(message);
  return code === 'AccessDeniedException' && /eks-auth:AssumeRoleForPodIdentity/i.test(message);
}

/** Credentials from a 200 answer, or an AgentError describing what the upstream said or got wrong. */
export function parseAssumeRoleResponse(response: RawResponse): ExchangeResult {
  const requestId = header(response, 'x-amzn-requestid');
  if (response.status !== 200) throw parseErrorResponse(response, requestId);
  let body: unknown;
  try {
    body = JSON.parse(response.body);
  } catch {
    throw agentError('UpstreamInvalidResponse', 'EKS Auth answered 200 with a body that is not JSON', { upstreamRequestId: requestId });
  }
  return { credentials: readCredentials(body, requestId), requestId };
}

function readCredentials(body: unknown, requestId: string | undefined): PodCredentials {
  const credentials = field(body, 'credentials');
  const accessKeyId = field(credentials, 'accessKeyId');
  const secretAccessKey = field(credentials, 'secretAccessKey');
  const sessionToken = field(credentials, 'sessionToken');
  const expiresAt = parseTimestamp(field(credentials, 'expiration'));
  if (typeof accessKeyId !== 'string' || typeof secretAccessKey !== 'string' || typeof sessionToken !== 'string' || expiresAt === undefined) {
    throw agentError('UpstreamInvalidResponse', 'EKS Auth answered 200 without complete credentials', { upstreamRequestId: requestId });
  }
  const arn = field(field(body, 'assumedRoleUser'), 'arn');
  return { accessKeyId, secretAccessKey, sessionToken, accountId: accountFromArn(arn), expiresAt };
}

/** rest-json timestamps are epoch seconds; ISO strings are accepted in case a proxy rewrites them. */
function parseTimestamp(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return Math.round(value * 1000);
  if (typeof value === 'string') {
    const ms = /^\d+(\.\d+)?$/.test(value) ? Number(value) * 1000 : Date.parse(value);
    return Number.isFinite(ms) && ms > 0 ? Math.round(ms) : undefined;
  }
  return undefined;
}

function accountFromArn(arn: unknown): string | undefined {
  if (typeof arn !== 'string') return undefined;
  const account = arn.split(':')[4];
  return account !== undefined && /^\d{12}$/.test(account) ? account : undefined;
}

function parseErrorResponse(response: RawResponse, requestId: string | undefined): AgentError {
  const body = parseJsonObject(response.body);
  const name = errorName(header(response, 'x-amzn-errortype'), field(body, '__type'), field(body, 'code') ?? field(body, 'Code'));
  const rawMessage = field(body, 'message') ?? field(body, 'Message');
  const message = typeof rawMessage === 'string' && rawMessage !== '' ? rawMessage.slice(0, 512) : `EKS Auth answered ${response.status}`;
  if (response.status < 400 || response.status > 599) {
    return agentError('UpstreamInvalidResponse', `EKS Auth answered unexpected status ${response.status}`, { upstreamRequestId: requestId });
  }
  const code = name ?? (response.status >= 500 ? 'InternalServerException' : 'UpstreamError');
  const nodeCredentialsRejected = refusesNode(code, response.status, message);
  // A refused signature says nothing about the pod (as in sts-client.ts): cached credentials stand in
  // and nothing is remembered against its token. A missing permission stays AccessDenied's verdict.
  const retryable = response.status === 429 || response.status >= 500 || RETRYABLE_NAMES.has(code) || (nodeCredentialsRejected && code !== 'AccessDeniedException');
  return new AgentError(code, response.status, message, { retryable, upstreamRequestId: requestId, nodeCredentialsRejected });
}

/** The error name from whichever place the service put it, stripped of namespaces and URIs. */
function errorName(...candidates: unknown[]): string | undefined {
  for (const candidate of candidates) {
    if (typeof candidate !== 'string') continue;
    const name = candidate.split(':')[0]?.split('#').pop()?.trim();
    if (name !== undefined && NAME.test(name)) return name;
  }
  return undefined;
}

function header(response: RawResponse, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function parseJsonObject(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function field(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[key] : undefined;
}
