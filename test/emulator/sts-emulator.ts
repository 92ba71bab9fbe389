// A local stand-in for STS `AssumeRole` over the real Query protocol (form body in, XML out), with
// real SigV4 checks, STS's validation and error shapes, and fault injection for failure-path tests.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { FaultQueue, startEmulatorServer } from './emulator-server.ts';
import { verifySigV4, type SigV4Credential, type SigV4ErrorCode } from './sigv4-verifier.ts';

/** A role the caller may assume: the emulated trust policy. */
export type StsRole = {
  /** IAM's MaxSessionDuration, 3600–43200; default 3600. */
  maxSessionDurationSeconds?: number;
  /** Models an `sts:ExternalId` trust condition: requests must carry exactly this value. */
  externalId?: string;
  /** `false` models a trust policy without `sts:TagSession`, so tagged requests are denied. Default true. */
  allowTags?: boolean;
};

export type StsFault =
  | { kind: 'latency'; ms: number }
  | { kind: 'error'; status: number; code: string; message?: string }
  | { kind: 'malformed' }
  | { kind: 'expired-credentials' }
  | { kind: 'reset' };

export type StsTag = { key: string; value: string };

/**
 * One handled request; `status` 0 means reset. Request parameters are recorded as sent (verified or
 * not, so failure paths can be asserted on); `accessKeyId` appears only once the signature checks out.
 * Secrets and session tokens are never kept.
 */
export type StsCall = {
  at: number;
  status: number;
  code?: string;
  action?: string;
  accessKeyId?: string;
  roleArn?: string;
  roleSessionName?: string;
  durationSeconds?: number;
  externalId?: string;
  policy?: string;
  tags: StsTag[];
  transitiveTagKeys: string[];
};

/** `roles` is keyed by role ARN; `accountId` (default 000000000000) names the caller in AccessDenied messages;
 *  `now` in epoch ms; `log` never receives secrets. */
export type StsEmulatorOptions = {
  callerCredentials: SigV4Credential[];
  region: string;
  roles: Record<string, StsRole>;
  accountId?: string;
  host?: string;
  port?: number;
  now?: () => number;
  log?: (msg: string) => void;
};

export type StsEmulator = {
  readonly url: string;
  readonly port: number;
  readonly calls: readonly StsCall[];
  readonly callCount: number;
  /** The next `times` requests get `fault`, before any verification. */
  inject(fault: StsFault, times?: number): void;
  clearFaults(): void;
  close(): Promise<void>;
};

type HttpReply = { status: number; body: string; code?: string; headers?: Record<string, string> };
type Reply = HttpReply | { reset: true };
type AssumeRoleInput = {
  roleArn: string;
  roleSessionName: string;
  durationSeconds?: number;
  externalId?: string;
  policy?: string;
  tags: StsTag[];
  transitiveTagKeys: string[];
};

const VERSION = '2011-06-15';
const XMLNS = `https://sts.amazonaws.com/doc/${VERSION}/`;
const MAX_BODY_BYTES = 64 * 1024;
const DEFAULT_DURATION_SECONDS = 3600;
const MAX_POLICY_CHARS = 2048;
const MAX_TAGS = 50;
const ROLE_ARN = /^arn:(aws[a-z-]*):iam::(\d{12}):role\/(?:[\w+=,.@-]+\/)*([\w+=,.@-]{1,64})$/;
const SESSION_NAME = /^[\w+=,.@-]*$/;
const EXTERNAL_ID = /^[\w+=,.@:/-]*$/;
const TAG_KEY = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$/u;
const TAG_VALUE = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
const FALLBACK_ROLE_ARN = 'arn:aws:iam::000000000000:role/sts-emulator';

/** STS names these failures differently from the JSON services the verifier was written for. */
const SIGV4_CODES: Record<SigV4ErrorCode, string> = {
  MissingAuthenticationTokenException: 'MissingAuthenticationToken',
  UnrecognizedClientException: 'InvalidClientTokenId',
  InvalidSignatureException: 'SignatureDoesNotMatch',
  IncompleteSignatureException: 'IncompleteSignature',
};

export async function startStsEmulator(options: StsEmulatorOptions): Promise<StsEmulator> {
  const now = options.now ?? Date.now;
  const callerArn = `arn:aws:iam::${options.accountId ?? '000000000000'}:user/agent`;
  const roles = new Map(Object.entries(options.roles));
  for (const [arn, role] of roles) checkRoleOption(arn, role);
  const faults = new FaultQueue<StsFault>();
  const calls: StsCall[] = [];

  function applyFault(fault: StsFault, params: URLSearchParams): Reply | undefined {
    switch (fault.kind) {
      case 'latency': return undefined;
      case 'error': return errorReply(fault.status, fault.code, fault.message ?? `Injected ${fault.code}`);
      case 'malformed': return { status: 200, body: '<html>not xml' };
      case 'reset': return { reset: true };
      case 'expired-credentials': {
        // Answers whatever was asked, unverified, so fall back when the request names no usable role.
        const roleArn = params.get('RoleArn') ?? '';
        const session = params.get('RoleSessionName') ?? '';
        const input = {
          roleArn: ROLE_ARN.test(roleArn) ? roleArn : FALLBACK_ROLE_ARN,
          roleSessionName: session.length >= 2 && session.length <= 64 && SESSION_NAME.test(session) ? session : 'sts-emulator',
          tags: [],
          transitiveTagKeys: [],
        };
        return success(input, now() - 60_000);
      }
    }
  }

  async function dispatch(req: IncomingMessage, body: Buffer, params: URLSearchParams, call: StsCall, closed: AbortSignal): Promise<Reply> {
    const fault = faults.take();
    if (fault?.kind === 'latency') await sleep(fault.ms, undefined, { signal: closed });
    const injected = fault === undefined ? undefined : applyFault(fault, params);
    if (injected !== undefined) return injected;

    const request = { method: req.method ?? 'POST', path: req.url ?? '/', headers: req.headers, body };
    const verdict = await verifySigV4(request, { credentials: options.callerCredentials, region: options.region, service: 'sts', now });
    if (!verdict.ok) return errorReply(verdict.status, SIGV4_CODES[verdict.code], verdict.message);
    call.accessKeyId = verdict.accessKeyId;

    const action = params.get('Action');
    if (action === null || action === '') return errorReply(400, 'MissingAction', 'Missing Action');
    const version = params.get('Version') ?? '';
    if (action !== 'AssumeRole' || version !== VERSION) {
      return errorReply(400, 'InvalidAction', `Could not find operation ${action} for version ${version || 'NO_VERSION_SPECIFIED'}`);
    }
    return assumeRole(params);
  }

  function assumeRole(params: URLSearchParams): HttpReply {
    const parsed = parseAssumeRole(params);
    if ('status' in parsed) return parsed;
    const input = parsed;
    // Order follows STS: shape validation and parameter checks above, then authorisation, then role limits.
    const role = roles.get(input.roleArn);
    const denied = (action: string) =>
      errorReply(403, 'AccessDenied', `User: ${callerArn} is not authorized to perform: ${action} on resource: ${input.roleArn}`);
    if (role === undefined) return denied('sts:AssumeRole');
    if (role.externalId !== undefined && role.externalId !== input.externalId) return denied('sts:AssumeRole');
    if (role.allowTags === false && (input.tags.length > 0 || input.transitiveTagKeys.length > 0)) return denied('sts:TagSession');
    const maxDuration = role.maxSessionDurationSeconds ?? DEFAULT_DURATION_SECONDS;
    if (input.durationSeconds !== undefined && input.durationSeconds > maxDuration) {
      return errorReply(400, 'ValidationError', 'The requested DurationSeconds exceeds the MaxSessionDuration set for this role.');
    }
    return success(input, now() + (input.durationSeconds ?? DEFAULT_DURATION_SECONDS) * 1000);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, closed: AbortSignal): Promise<void> {
    const call: StsCall = { at: now(), status: 0, tags: [], transitiveTagKeys: [] };
    const body = await readBody(req);
    const pathname = (req.url ?? '/').split('?')[0] ?? '';
    const params = body === undefined || !isForm(req) ? new URLSearchParams() : new URLSearchParams(body.toString('utf8'));
    record(call, params);
    let reply: Reply;
    if (body === undefined) {
      // The rest of the body is never read, so the connection cannot be reused.
      reply = errorReply(413, 'RequestEntityTooLarge', `Request body exceeds ${MAX_BODY_BYTES} bytes.`, { connection: 'close' });
    } else if (pathname !== '/') {
      reply = errorReply(404, 'NotFound', `No resource at ${pathname}; STS answers POST /.`);
    } else if (req.method !== 'POST') {
      reply = errorReply(405, 'MethodNotAllowed', `Method ${req.method ?? ''} is not allowed; STS answers POST /.`, { allow: 'POST' });
    } else {
      reply = await dispatch(req, body, params, call, closed);
    }
    calls.push(call);
    if ('reset' in reply) return void req.socket.destroy();
    call.status = reply.status;
    if (reply.code !== undefined) call.code = reply.code;
    send(res, reply);
  }

  const server = await startEmulatorServer({
    name: 'sts emulator',
    host: options.host,
    port: options.port,
    log: options.log,
    handle,
    answerFailure: (res) => send(res, errorReply(500, 'InternalFailure', 'Internal failure.')),
  });
  return {
    url: server.url,
    port: server.port,
    calls,
    get callCount() { return calls.length; },
    inject: (fault, times) => faults.inject(fault, times),
    clearFaults: () => faults.clear(),
    close: () => server.close(),
  };
}

function checkRoleOption(arn: string, role: StsRole): void {
  if (!ROLE_ARN.test(arn)) throw new TypeError(`sts emulator: ${arn} is not an IAM role ARN`);
  const max = role.maxSessionDurationSeconds;
  if (max !== undefined && !(Number.isInteger(max) && max >= 3600 && max <= 43_200)) {
    throw new RangeError(`sts emulator: maxSessionDurationSeconds for ${arn} must be an integer in 3600..43200 (IAM's range)`);
  }
}

/** Fills the call record from the raw form, before any check, so rejected requests are visible too. */
function record(call: StsCall, params: URLSearchParams): void {
  const text = (name: string) => params.get(name) ?? undefined;
  const fields = {
    action: text('Action'),
    roleArn: text('RoleArn'),
    roleSessionName: text('RoleSessionName'),
    durationSeconds: readInteger(params.get('DurationSeconds')),
    externalId: text('ExternalId'),
    policy: text('Policy'),
  };
  for (const [key, value] of Object.entries(fields)) if (value !== undefined) Object.assign(call, { [key]: value });
  call.tags = readTags(params).map((t) => ({ key: t.key ?? '', value: t.value ?? '' }));
  call.transitiveTagKeys = readList(params, 'TransitiveTagKeys');
}

/** Checks like STS: Coral-style shape violations are gathered into one ValidationError, then parameter semantics. */
function parseAssumeRole(params: URLSearchParams): AssumeRoleInput | HttpReply {
  const violations: string[] = [];
  const violate = (value: string | null, member: string, constraint: string) =>
    violations.push(`Value ${value === null ? 'null' : `'${value}'`} at '${member}' failed to satisfy constraint: Member must ${constraint}`);
  const checkLength = (value: string, member: string, min: number, max: number) => {
    if (value.length < min) violate(value, member, `have length greater than or equal to ${min}`);
    else if (value.length > max) violate(value, member, `have length less than or equal to ${max}`);
  };

  const roleArn = params.get('RoleArn');
  if (roleArn === null) violate(null, 'roleArn', 'not be null');
  else checkLength(roleArn, 'roleArn', 20, 2048);

  const roleSessionName = params.get('RoleSessionName');
  if (roleSessionName === null) violate(null, 'roleSessionName', 'not be null');
  else {
    checkLength(roleSessionName, 'roleSessionName', 2, 64);
    if (!SESSION_NAME.test(roleSessionName)) violate(roleSessionName, 'roleSessionName', 'satisfy regular expression pattern: [\\w+=,.@-]*');
  }

  const durationText = params.get('DurationSeconds');
  const durationSeconds = readInteger(durationText);
  if (durationText !== null && durationSeconds === undefined) {
    violate(durationText, 'durationSeconds', 'be an integer');
  } else if (durationSeconds !== undefined && durationSeconds < 900) {
    violate(durationText, 'durationSeconds', 'have value greater than or equal to 900');
  } else if (durationSeconds !== undefined && durationSeconds > 43_200) {
    violate(durationText, 'durationSeconds', 'have value less than or equal to 43200');
  }

  const externalId = params.get('ExternalId') ?? undefined;
  if (externalId !== undefined) {
    checkLength(externalId, 'externalId', 2, 1224);
    if (!EXTERNAL_ID.test(externalId)) violate(externalId, 'externalId', 'satisfy regular expression pattern: [\\w+=,.@:\\/-]*');
  }

  const policy = params.get('Policy') ?? undefined;
  if (policy === '') violate(policy, 'policy', 'have length greater than or equal to 1');

  const rawTags = readTags(params);
  if (rawTags.length > MAX_TAGS) violate(`[${rawTags.length} tags]`, 'tags', `have length less than or equal to ${MAX_TAGS}`);
  const tags: StsTag[] = [];
  rawTags.forEach(({ key, value }, i) => {
    const at = `tags.${i + 1}.member`;
    if (key === undefined) violate(null, `${at}.key`, 'not be null');
    else {
      checkLength(key, `${at}.key`, 1, 128);
      if (!TAG_KEY.test(key)) violate(key, `${at}.key`, 'satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+');
    }
    if (value === undefined) violate(null, `${at}.value`, 'not be null');
    else {
      checkLength(value, `${at}.value`, 0, 256);
      if (!TAG_VALUE.test(value)) violate(value, `${at}.value`, 'satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*');
    }
    tags.push({ key: key ?? '', value: value ?? '' });
  });
  const transitiveTagKeys = readList(params, 'TransitiveTagKeys');
  if (transitiveTagKeys.length > MAX_TAGS) {
    violate(`[${transitiveTagKeys.length} keys]`, 'transitiveTagKeys', `have length less than or equal to ${MAX_TAGS}`);
  }

  if (violations.length > 0) {
    const count = violations.length === 1 ? '1 validation error' : `${violations.length} validation errors`;
    return errorReply(400, 'ValidationError', `${count} detected: ${violations.join('; ')}`);
  }
  if (roleArn === null || roleSessionName === null) throw new Error('unreachable: null members are violations');
  if (!ROLE_ARN.test(roleArn)) return errorReply(400, 'ValidationError', 'Request ARN is invalid');

  // Session tag keys are case-insensitive in STS, for duplicates and for transitive keys alike.
  const keys = new Set(tags.map((t) => t.key.toLowerCase()));
  if (keys.size < tags.length) {
    return errorReply(400, 'InvalidParameterValue', 'Duplicate tag keys found. Please note that Tag keys are case insensitive.');
  }
  if (transitiveTagKeys.some((k) => !keys.has(k.toLowerCase()))) {
    return errorReply(400, 'InvalidParameterValue', 'The specified transitive tag key must be included in the requested tags.');
  }
  if (policy !== undefined) {
    if (policy.length > MAX_POLICY_CHARS) {
      const percent = Math.ceil((policy.length / MAX_POLICY_CHARS) * 100);
      return errorReply(400, 'PackedPolicyTooLarge', `Packed policy consumes ${percent}% of allotted space, please use smaller policy for this session.`);
    }
    if (!isJsonObject(policy)) return errorReply(400, 'MalformedPolicyDocument', 'The policy is not in the valid JSON format.');
  }
  const input: AssumeRoleInput = { roleArn, roleSessionName, tags, transitiveTagKeys };
  if (durationSeconds !== undefined) input.durationSeconds = durationSeconds;
  if (externalId !== undefined) input.externalId = externalId;
  if (policy !== undefined) input.policy = policy;
  return input;
}

function success(input: AssumeRoleInput, expiresAtMs: number): HttpReply {
  const [, partition = 'aws', account = '000000000000', roleName = 'role'] = ROLE_ARN.exec(input.roleArn) ?? [];
  // A role id is stable for a role, so derive it from the ARN rather than at random.
  const roleId = `AROA${alnum(createHash('sha256').update(input.roleArn).digest()).slice(0, 17)}`;
  const session = input.roleSessionName;
  const size = packedPolicySize(input);
  const requestId = randomUUID();
  const body = [
    `<AssumeRoleResponse xmlns="${XMLNS}">`,
    '  <AssumeRoleResult>',
    '    <AssumedRoleUser>',
    `      <AssumedRoleId>${xml(`${roleId}:${session}`)}</AssumedRoleId>`,
    `      <Arn>${xml(`arn:${partition}:sts::${account}:assumed-role/${roleName}/${session}`)}</Arn>`,
    '    </AssumedRoleUser>',
    '    <Credentials>',
    `      <AccessKeyId>ASIA${alnum(randomBytes(16))}</AccessKeyId>`,
    `      <SecretAccessKey>${xml(randomBytes(30).toString('base64'))}</SecretAccessKey>`,
    `      <SessionToken>${xml(randomBytes(360).toString('base64'))}</SessionToken>`,
    `      <Expiration>${isoSeconds(expiresAtMs)}</Expiration>`,
    '    </Credentials>',
    ...(size === undefined ? [] : [`    <PackedPolicySize>${size}</PackedPolicySize>`]),
    '  </AssumeRoleResult>',
    `  <ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata>`,
    '</AssumeRoleResponse>',
    '',
  ].join('\n');
  return { status: 200, body, headers: { 'x-amzn-requestid': requestId } };
}

/**
 * STS reports how full the packed session policy and tags are, as a percentage. Its packing is
 * private, so this approximates it: the fuller of the policy (by minified length) and the tags.
 */
function packedPolicySize(input: AssumeRoleInput): number | undefined {
  if (input.policy === undefined && input.tags.length === 0) return undefined;
  const policyChars = input.policy === undefined ? 0 : JSON.stringify(JSON.parse(input.policy)).length;
  const tagChars = input.tags.reduce((sum, t) => sum + t.key.length + t.value.length, 0);
  const percent = Math.max(policyChars / MAX_POLICY_CHARS, tagChars / (MAX_TAGS * (128 + 256))) * 100;
  return Math.max(1, Math.min(100, Math.ceil(percent)));
}

function errorReply(status: number, code: string, message: string, headers: Record<string, string> = {}): HttpReply {
  const requestId = randomUUID();
  const type = status >= 500 ? 'Receiver' : 'Sender';
  const body =
    `<ErrorResponse xmlns="${XMLNS}">\n` +
    `  <Error>\n    <Type>${type}</Type>\n    <Code>${xml(code)}</Code>\n    <Message>${xml(message)}</Message>\n  </Error>\n` +
    `  <RequestId>${requestId}</RequestId>\n</ErrorResponse>\n`;
  return { status, code, body, headers: { ...headers, 'x-amzn-requestid': requestId } };
}

function send(res: ServerResponse, reply: HttpReply): void {
  res.writeHead(reply.status, {
    'x-amzn-requestid': randomUUID(),
    ...reply.headers,
    'content-type': 'text/xml',
    'content-length': Buffer.byteLength(reply.body),
  });
  res.end(reply.body);
}

/** Query-protocol list members: `Name.member.N`, ordered by N. An empty `Name=` is the SDK's empty list. */
function readList(params: URLSearchParams, name: string): string[] {
  const pattern = new RegExp(`^${name}\\.member\\.(\\d+)$`);
  const items: [number, string][] = [];
  for (const [key, value] of params) {
    const match = pattern.exec(key);
    if (match !== null) items.push([Number(match[1]), value]);
  }
  return items.sort((a, b) => a[0] - b[0]).map(([, value]) => value);
}

function readTags(params: URLSearchParams): { key?: string; value?: string }[] {
  const byIndex = new Map<number, { key?: string; value?: string }>();
  for (const [name, value] of params) {
    const match = /^Tags\.member\.(\d+)\.(Key|Value)$/.exec(name);
    if (match === null) continue;
    const index = Number(match[1]);
    const tag = byIndex.get(index) ?? {};
    if (match[2] === 'Key') tag.key ??= value;
    else tag.value ??= value;
    byIndex.set(index, tag);
  }
  return [...byIndex].sort((a, b) => a[0] - b[0]).map(([, tag]) => tag);
}

/** Plain decimal only: `Number()` would also take '0x384', '1e3' and ' 900 '. */
function readInteger(text: string | null): number | undefined {
  return text !== null && /^-?\d{1,15}$/.test(text) ? Number(text) : undefined;
}

function isForm(req: IncomingMessage): boolean {
  return (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded');
}

function isJsonObject(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}

/**
 * Resolves undefined once the body passes the limit. Stops listening rather than destroying the
 * request, so the 413 can still be written; node discards the rest and closes the connection.
 */
function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = () => {
      req.off('data', onData).off('end', onEnd).off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(chunk);
      stop();
      resolve(undefined);
    };
    const onEnd = () => { stop(); resolve(Buffer.concat(chunks)); };
    const onError = (error: Error) => { stop(); reject(error); };
    req.on('data', onData).on('end', onEnd).on('error', onError);
  });
}

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
/** Echoed request values may hold characters XML 1.0 cannot carry even as references; those become U+FFFD. */
const xml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => XML_ESCAPES[c] ?? c).replace(/[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]|\p{Cs}/gu, '\uFFFD');

const isoSeconds = (ms: number): string => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** Maps bytes onto the AWS key-id alphabet; the slight modulo bias is irrelevant here. */
const alnum = (bytes: Uint8Array): string => Array.from(bytes, (b) => ALNUM[b % ALNUM.length]).join('');
