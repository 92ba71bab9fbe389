import { hash } from 'node:crypto';
import { agentError } from '../errors.ts';
import type { PodIdentity } from './identity.ts';

/** What the agent reads from a projected service-account token without verifying its signature. */
export interface ProjectedToken {
  /** The token as the pod sent it; only ever forwarded to the upstream, never logged. */
  readonly raw: string;
  /** SHA-256 of the token: what memos (and, for an unverified token, the cache) key it by, never the token itself. */
  readonly digest: string;
  /** Epoch seconds. */
  readonly expiresAt: number;
  /** Epoch seconds, when the token has an nbf claim. */
  readonly notBefore: number | undefined;
  readonly identity: PodIdentity;
}

export interface TokenCheckOptions {
  readonly audience: string;
  /** Epoch milliseconds. */
  readonly now: number;
  readonly skewSeconds?: number;
  readonly maxBytes?: number;
}

export const MAX_TOKEN_BYTES = 16 * 1024;
const DEFAULT_SKEW_SECONDS = 60;
const SEGMENT = /^[A-Za-z0-9_-]+$/;

/**
 * The checks that cost no upstream quota: shape, size, audience and validity window.
 * Throws an AgentError with a distinct Code for each failure. Messages never quote the token.
 */
export function checkProjectedToken(authorization: string | undefined, options: TokenCheckOptions): ProjectedToken {
  const token = parseProjectedToken(readToken(authorization, options.maxBytes), options.audience);
  checkValidityWindow(token, options.now, options.skewSeconds);
  return token;
}

/** The token from an Authorization header, or MissingToken / TokenTooLarge. */
export function readToken(authorization: string | undefined, maxBytes = MAX_TOKEN_BYTES): string {
  const raw = isBareToken(authorization) ? (authorization as string) : stripScheme(authorization?.trim() ?? '');
  if (raw === '') throw agentError('MissingToken', 'the Authorization header must carry the pod\'s service-account token');
  // A UTF-16 unit is one to three UTF-8 bytes: the length alone settles all but the largest, without a scan.
  if (raw.length > maxBytes || (raw.length * 3 > maxBytes && Buffer.byteLength(raw) > maxBytes)) throw agentError('TokenTooLarge', `the token is longer than ${maxBytes} bytes`);
  return raw;
}

/** What SDKs send: no surrounding space, no scheme (a JWT starts with "ey"). Checked by two characters, not a scan. */
function isBareToken(authorization: string | undefined): boolean {
  if (authorization === undefined || authorization.length === 0) return false;
  const first = authorization.charCodeAt(0);
  const last = authorization.charCodeAt(authorization.length - 1);
  return first > 0x20 && last > 0x20 && first !== 0x62 && first !== 0x42; // not space, not "b" or "B" (Bearer)
}

/** Base64 SHA-256: a fixed-size fingerprint that stands in for a secret in maps and keys. */
export function sha256(raw: string): string {
  return hash('sha256', raw, 'base64');
}

/** Shape and audience: what does not change with time, so a verdict can be memoised by key. */
export function parseProjectedToken(raw: string, audience: string, digest: string = sha256(raw)): ProjectedToken {
  const segments = raw.split('.');
  if (segments.length !== 3 || !segments.every((segment) => SEGMENT.test(segment))) {
    throw agentError('MalformedToken', 'the token is not a JWT: expected three base64url segments separated by dots');
  }
  const header = decodeJsonSegment(segments[0] as string, 'header');
  if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none') {
    throw agentError('MalformedToken', 'the token header must name a signing algorithm');
  }
  const claims = decodeJsonSegment(segments[1] as string, 'payload');
  checkAudience(claims.aud, audience);
  const { exp, nbf } = claims;
  if (!isEpochSeconds(exp)) throw agentError('MalformedToken', 'the token has no numeric exp claim');
  if (nbf !== undefined && !isEpochSeconds(nbf)) throw agentError('MalformedToken', 'the token\'s nbf claim is not a number');
  return { raw, digest, expiresAt: exp, notBefore: nbf, identity: readIdentity(claims) };
}

/** exp and nbf against the clock (epoch ms), with skew allowed either way. */
export function checkValidityWindow(token: ProjectedToken, now: number, skewSeconds = DEFAULT_SKEW_SECONDS): void {
  const nowSeconds = now / 1000;
  if (token.expiresAt + skewSeconds <= nowSeconds) throw agentError('TokenExpired', `the token expired at ${isoSeconds(token.expiresAt)}`);
  if (token.notBefore !== undefined && token.notBefore - skewSeconds > nowSeconds) {
    throw agentError('TokenNotYetValid', `the token is not valid before ${isoSeconds(token.notBefore)}`);
  }
}

// SDKs send the bare token; a "Bearer " prefix from a hand-written client is harmless to accept.
function stripScheme(value: string): string {
  return /^bearer\s+/i.test(value) ? value.replace(/^bearer\s+/i, '') : value;
}

type JsonObject = Record<string, unknown>;

function decodeJsonSegment(segment: string, part: 'header' | 'payload'): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw agentError('MalformedToken', `the token ${part} is not base64url-encoded JSON`);
  }
  if (!isObject(value)) throw agentError('MalformedToken', `the token ${part} is not a JSON object`);
  return value;
}

function checkAudience(aud: unknown, expected: string): void {
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
  if (!audiences.includes(expected)) throw agentError('InvalidAudience', `the token's audience must include "${expected}"`);
}

function readIdentity(claims: JsonObject): PodIdentity {
  const k8s = isObject(claims['kubernetes.io']) ? claims['kubernetes.io'] : {};
  const serviceAccount = isObject(k8s.serviceaccount) ? k8s.serviceaccount : {};
  const pod = isObject(k8s.pod) ? k8s.pod : {};
  return {
    namespace: asString(k8s.namespace),
    serviceAccount: asString(serviceAccount.name),
    podName: asString(pod.name),
    podUid: asString(pod.uid),
  };
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isEpochSeconds(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 && value < 1e11;
}

function asString(value: unknown): string | undefined {
  return typeof value === 'string' && value.length <= 253 ? value : undefined;
}

function isoSeconds(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString();
}
