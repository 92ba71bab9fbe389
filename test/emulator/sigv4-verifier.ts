// Server-side SigV4 check for the EKS Auth emulator: re-signs the request with the caller's
// secret using the same signer the SDKs use, so any canonicalisation mismatch shows up in tests.
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';

const ALGORITHM = 'AWS4-HMAC-SHA256';
const DEFAULT_MAX_SKEW_MS = 5 * 60_000;
const AUTH_PATTERN =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,\s]+), ?Signature=([0-9a-f]{64})$/;
const AMZ_DATE_PATTERN = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;

export type SigV4Credential = { accessKeyId: string; secretAccessKey: string; sessionToken?: string };

export type SigV4Request = {
  method: string;
  /** Path as sent on the wire, including any query string. */
  path: string;
  /** Lower-cased header names, as node:http delivers them. */
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
};

export type SigV4Options = {
  credentials: readonly SigV4Credential[];
  region: string;
  service: string;
  /** Epoch milliseconds. */
  now?: () => number;
  maxSkewMs?: number;
};

export type SigV4ErrorCode =
  | 'MissingAuthenticationTokenException'
  | 'UnrecognizedClientException'
  | 'InvalidSignatureException'
  | 'IncompleteSignatureException';

export type SigV4Verdict =
  | { ok: true; accessKeyId: string }
  | { ok: false; status: 403; code: SigV4ErrorCode; message: string };

type ParsedAuthorization = {
  accessKeyId: string;
  scopeDate: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
};

export async function verifySigV4(request: SigV4Request, options: SigV4Options): Promise<SigV4Verdict> {
  const authorization = header(request.headers, 'authorization');
  if (authorization === undefined) return deny('MissingAuthenticationTokenException', 'Missing Authentication Token');
  const auth = parseAuthorization(authorization);
  if (auth === undefined) {
    return deny('IncompleteSignatureException', `Authorization header requires ${ALGORITHM} Credential, SignedHeaders and Signature.`);
  }
  const credential = options.credentials.find((c) => c.accessKeyId === auth.accessKeyId);
  const sessionToken = header(request.headers, 'x-amz-security-token');
  if (credential === undefined || (credential.sessionToken !== undefined && credential.sessionToken !== sessionToken)) {
    return deny('UnrecognizedClientException', 'The security token included in the request is invalid.');
  }
  const problem = checkScopeAndDate(request, auth, options);
  if (problem !== undefined) return problem;
  const expected = await computeSignature(request, auth, credential, options);
  const matches = expected !== undefined && constantTimeEqual(expected, auth.signature);
  if (!matches) {
    return deny(
      'InvalidSignatureException',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
    );
  }
  return { ok: true, accessKeyId: auth.accessKeyId };
}

function parseAuthorization(value: string): ParsedAuthorization | undefined {
  const match = AUTH_PATTERN.exec(value.trim());
  if (match === null) return undefined;
  const [, accessKeyId, scopeDate, region, service, signedHeaders, signature] = match;
  return { accessKeyId, scopeDate, region, service, signedHeaders: signedHeaders.split(';'), signature };
}

function checkScopeAndDate(request: SigV4Request, auth: ParsedAuthorization, options: SigV4Options): SigV4Verdict | undefined {
  if (auth.region !== options.region || auth.service !== options.service) {
    return deny('InvalidSignatureException', `Credential should be scoped to region '${options.region}' and service '${options.service}'.`);
  }
  if (!auth.signedHeaders.includes('host')) {
    return deny('IncompleteSignatureException', "'Host' must be a 'SignedHeader' in the AWS Authorization.");
  }
  if (header(request.headers, 'x-amz-security-token') !== undefined && !auth.signedHeaders.includes('x-amz-security-token')) {
    return deny('IncompleteSignatureException', "'X-Amz-Security-Token' must be a 'SignedHeader' when present.");
  }
  const amzDate = header(request.headers, 'x-amz-date');
  const signingDate = amzDate === undefined ? undefined : parseAmzDate(amzDate);
  if (amzDate === undefined || signingDate === undefined || !auth.signedHeaders.includes('x-amz-date')) {
    return deny('IncompleteSignatureException', 'A signed X-Amz-Date header in ISO 8601 basic format is required.');
  }
  if (amzDate.slice(0, 8) !== auth.scopeDate) {
    return deny('InvalidSignatureException', 'Date in Credential scope does not match the X-Amz-Date header.');
  }
  const now = (options.now ?? Date.now)();
  if (Math.abs(now - signingDate.getTime()) > (options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS)) {
    return deny('InvalidSignatureException', `Signature expired: ${amzDate} is outside the allowed clock skew.`);
  }
  return undefined;
}

/** Returns undefined when the request cannot have been signed correctly (e.g. a signed header is absent). */
async function computeSignature(
  request: SigV4Request,
  auth: ParsedAuthorization,
  credential: SigV4Credential,
  options: SigV4Options,
): Promise<string | undefined> {
  const headers: Record<string, string> = {};
  for (const name of auth.signedHeaders) {
    const value = header(request.headers, name);
    if (value === undefined) return undefined;
    headers[name] = value;
  }
  // The signer trusts x-amz-content-sha256 instead of hashing the body, so hold it to the body.
  const contentHash = headers['x-amz-content-sha256'];
  if (contentHash !== undefined && contentHash !== createHash('sha256').update(request.body).digest('hex')) return undefined;
  const { pathname, query } = splitPath(request.path);
  const signer = new SignatureV4({
    credentials: { ...credential, sessionToken: credential.sessionToken ?? headers['x-amz-security-token'] },
    region: options.region,
    service: options.service,
    sha256: Hash.bind(null, 'sha256'),
    applyChecksum: false,
  });
  const signed = await signer.sign(
    { method: request.method, protocol: 'http:', hostname: 'verifier', path: pathname, query, headers, body: request.body },
    { signingDate: parseAmzDate(headers['x-amz-date'] ?? ''), signableHeaders: new Set(auth.signedHeaders) },
  );
  return /Signature=([0-9a-f]{64})$/.exec(signed.headers['authorization'] ?? '')?.[1];
}

function splitPath(path: string): { pathname: string; query: Record<string, string | string[]> } {
  const at = path.indexOf('?');
  if (at < 0) return { pathname: path, query: {} };
  const query: Record<string, string | string[]> = {};
  for (const pair of path.slice(at + 1).split('&').filter(Boolean)) {
    const eq = pair.indexOf('=');
    const key = safeDecode(eq < 0 ? pair : pair.slice(0, eq));
    const value = eq < 0 ? '' : safeDecode(pair.slice(eq + 1));
    const previous = query[key];
    query[key] = previous === undefined ? value : [previous, value].flat();
  }
  return { pathname: path.slice(0, at), query };
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function parseAmzDate(value: string): Date | undefined {
  const m = AMZ_DATE_PATTERN.exec(value);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second));
}

/** Multiple values are joined with ',' as the canonical form requires. */
function header(headers: SigV4Request['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

function constantTimeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function deny(code: SigV4ErrorCode, message: string): SigV4Verdict {
  return { ok: false, status: 403, code, message };
}
