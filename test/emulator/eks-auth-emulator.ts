// A local stand-in for EKS Auth `AssumeRoleForPodIdentity` (protocols.md §2): real wire shapes,
// real SigV4 and token checks, plus fault injection so agent tests can exercise failure paths.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeJwt, errors, jwtVerify, type CryptoKey } from 'jose';
import { FaultQueue, startEmulatorServer } from './emulator-server.ts';
import { verifySigV4, type SigV4Credential } from './sigv4-verifier.ts';
import { DEFAULT_AUDIENCE, readKubernetesSubject, type KubernetesSubject } from './token-issuer.ts';

export type PodIdentityAssociation = { namespace: string; serviceAccount: string; roleArn: string };

export type Fault =
  | { kind: 'latency'; ms: number }
  | { kind: 'error'; status: number; type: string; message?: string }
  | { kind: 'malformed' }
  | { kind: 'expired-credentials' }
  | { kind: 'missing-fields' }
  | { kind: 'reset' };

/** One handled request; `status` 0 means reset. Key id and subject appear as checks pass; the token is never kept. */
export type EmulatorCall = { at: number; path: string; status: number; accessKeyId?: string; namespace?: string; serviceAccount?: string };

/** `verificationKey`: the issuer's public key; `issuer` checked only when given; lifetime default 21600 s (6 h);
 *  `now` in epoch ms; `log` never receives tokens or secrets. */
export type EmulatorOptions = {
  nodeCredentials: SigV4Credential[];
  region: string;
  clusterName: string;
  verificationKey: CryptoKey;
  issuer?: string;
  audience?: string;
  associations: PodIdentityAssociation[];
  credentialLifetimeSeconds?: number;
  host?: string;
  port?: number;
  now?: () => number;
  log?: (msg: string) => void;
};

export type EksAuthEmulator = {
  readonly url: string;
  readonly port: number;
  readonly calls: readonly EmulatorCall[];
  readonly callCount: number;
  /** The next `times` requests to the operation's route get `fault`, before any verification. */
  inject(fault: Fault, times?: number): void;
  clearFaults(): void;
  close(): Promise<void>;
};

export type AssumeRoleForPodIdentityResponse = {
  subject: { namespace: string; serviceAccount: string };
  audience: string;
  podIdentityAssociation: { associationArn: string; associationId: string };
  assumedRoleUser: { arn: string; assumeRoleId: string };
  credentials: { sessionToken: string; secretAccessKey: string; accessKeyId: string; expiration: number };
};

type HttpReply = { status: number; body: string; errorType?: string };
type Reply = HttpReply | { reset: true };
type Association = PodIdentityAssociation & { associationId: string };
type Minted = { region: string; clusterName: string; audience: string; expiresAtMs: number };

const ROUTE = /^\/clusters\/([^/]+)\/assume-role-for-pod-identity$/;
const FALLBACK_SUBJECT: KubernetesSubject = { namespace: 'default', serviceAccount: 'default', podName: 'pod' };
const FALLBACK_ASSOCIATION: Association = { ...FALLBACK_SUBJECT, roleArn: 'arn:aws:iam::000000000000:role/eks-auth-emulator', associationId: 'a-0' };

export async function startEksAuthEmulator(options: EmulatorOptions): Promise<EksAuthEmulator> {
  const now = options.now ?? Date.now;
  const audience = options.audience ?? DEFAULT_AUDIENCE;
  const lifetimeMs = (options.credentialLifetimeSeconds ?? 21_600) * 1000;
  const withId = (a: PodIdentityAssociation): Association => ({ ...a, associationId: `a-${alnum(randomBytes(17)).toLowerCase()}` });
  const associations = new Map(options.associations.map((a) => [`${a.namespace}/${a.serviceAccount}`, withId(a)]));
  const faults = new FaultQueue<Fault>();
  const calls: EmulatorCall[] = [];
  const mint = (expiresAtMs: number): Minted => ({ region: options.region, clusterName: options.clusterName, audience, expiresAtMs });
  const findAssociation = (s: KubernetesSubject) => associations.get(`${s.namespace}/${s.serviceAccount}`);

  /** Response faults answer whatever was sent, so the subject is read from the token unverified. */
  function applyFault(fault: Fault, body: Buffer): Reply | undefined {
    const subject = peekSubject(body) ?? FALLBACK_SUBJECT;
    const association = findAssociation(subject) ?? FALLBACK_ASSOCIATION;
    switch (fault.kind) {
      case 'latency': return undefined;
      case 'error': return errorReply(fault.status, fault.type, fault.message ?? `Injected ${fault.type}`);
      case 'malformed': return { status: 200, body: '<html>not json' };
      case 'reset': return { reset: true };
      case 'expired-credentials': return json(200, buildResponse(subject, association, mint(now() - 60_000)));
      case 'missing-fields': return json(200, { ...buildResponse(subject, association, mint(now())), credentials: undefined });
    }
  }

  async function assumeRole(req: IncomingMessage, clusterLabel: string, body: Buffer, call: EmulatorCall, closed: AbortSignal): Promise<Reply> {
    const fault = faults.take();
    if (fault?.kind === 'latency') await sleep(fault.ms, undefined, { signal: closed });
    const injected = fault === undefined ? undefined : applyFault(fault, body);
    if (injected !== undefined) return injected;

    const request = { method: req.method ?? 'POST', path: req.url ?? '/', headers: req.headers, body };
    const verdict = await verifySigV4(request, { credentials: options.nodeCredentials, region: options.region, service: 'eks-auth', now });
    if (!verdict.ok) return errorReply(verdict.status, verdict.code, verdict.message);
    call.accessKeyId = verdict.accessKeyId;

    if (clusterLabel !== options.clusterName) return errorReply(404, 'ResourceNotFoundException', `No cluster found for name: ${clusterLabel}.`);
    const token = readToken(body);
    if (token === undefined) return errorReply(400, 'InvalidRequestException', 'Request body must be JSON {"token": "<jwt>"}.');
    const subject = await verifyToken(token);
    if ('status' in subject) return subject;
    call.namespace = subject.namespace;
    call.serviceAccount = subject.serviceAccount;

    const association = findAssociation(subject);
    const unassigned = `No Pod Identity assignment found for namespace ${subject.namespace} service account ${subject.serviceAccount}.`;
    if (association === undefined) return errorReply(404, 'ResourceNotFoundException', unassigned);
    return json(200, buildResponse(subject, association, mint(now() + lifetimeMs)));
  }

  async function verifyToken(token: string): Promise<KubernetesSubject | HttpReply> {
    try {
      const issuer = options.issuer === undefined ? {} : { issuer: options.issuer };
      const verifyOptions = { algorithms: ['RS256'], audience, currentDate: new Date(now()), ...issuer };
      const { payload } = await jwtVerify(token, options.verificationKey, verifyOptions);
      return readKubernetesSubject(payload) ?? errorReply(400, 'InvalidTokenException', 'Token has no kubernetes.io service account claims.');
    } catch (error) {
      if (error instanceof errors.JWTExpired) return errorReply(400, 'ExpiredTokenException', 'The service account token has expired.');
      const code = error instanceof errors.JOSEError ? error.code : 'ERR_UNKNOWN';
      return errorReply(400, 'InvalidTokenException', `The service account token is not valid (${code}).`);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse, closed: AbortSignal): Promise<void> {
    const path = req.url ?? '/';
    const call: EmulatorCall = { at: now(), path, status: 0 };
    const body = await readBody(req);
    const pathname = path.split('?')[0] ?? '';
    const match = req.method === 'POST' ? ROUTE.exec(pathname) : null;
    const reply = match === null
      ? errorReply(404, 'UnknownOperationException', `No operation matches ${req.method} ${pathname}.`)
      : await assumeRole(req, match[1] ?? '', body, call, closed);
    calls.push(call);
    if ('reset' in reply) return void req.socket.destroy();
    call.status = reply.status;
    send(res, reply);
  }

  const server = await startEmulatorServer({
    name: 'eks-auth emulator',
    host: options.host,
    port: options.port,
    log: options.log,
    handle,
    answerFailure: (res) => send(res, errorReply(500, 'InternalServerException', 'Internal failure.')),
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

function buildResponse(subject: KubernetesSubject, association: Association, m: Minted): AssumeRoleForPodIdentityResponse {
  const account = association.roleArn.split(':')[4] ?? '000000000000';
  const roleName = association.roleArn.split('/').at(-1) ?? 'role';
  const session = `eks-${m.clusterName}-${subject.podName}-${randomUUID()}`.slice(0, 64);
  // A role id is stable for a role, so derive it from the ARN rather than at random.
  const roleId = `AROA${alnum(createHash('sha256').update(association.roleArn).digest()).slice(0, 17)}`;
  const { associationId } = association;
  const associationArn = `arn:aws:eks:${m.region}:${account}:podidentityassociation/${m.clusterName}/${associationId}`;
  return {
    subject: { namespace: subject.namespace, serviceAccount: subject.serviceAccount },
    audience: m.audience,
    podIdentityAssociation: { associationArn, associationId },
    assumedRoleUser: { arn: `arn:aws:sts::${account}:assumed-role/${roleName}/${session}`, assumeRoleId: `${roleId}:${session}` },
    credentials: {
      sessionToken: randomBytes(360).toString('base64'),
      secretAccessKey: randomBytes(30).toString('base64'),
      accessKeyId: `ASIA${alnum(randomBytes(16))}`,
      expiration: Math.floor(m.expiresAtMs / 1000),
    },
  };
}

function send(res: ServerResponse, reply: HttpReply): void {
  const errorType = reply.errorType === undefined ? {} : { 'x-amzn-errortype': reply.errorType };
  const length = Buffer.byteLength(reply.body);
  res.writeHead(reply.status, { 'x-amzn-requestid': randomUUID(), 'content-type': 'application/json', 'content-length': length, ...errorType });
  res.end(reply.body);
}

const json = (status: number, value: unknown): HttpReply => ({ status, body: JSON.stringify(value) });

function errorReply(status: number, type: string, message: string): HttpReply {
  return { status, errorType: type, body: JSON.stringify({ __type: type, message }) };
}

/** Always drains the body, even on routes that ignore it, so keep-alive connections stay usable. */
async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function readToken(body: Buffer): string | undefined {
  try {
    // `null` makes the destructuring throw; other non-objects simply have no `token`.
    const { token } = JSON.parse(body.toString('utf8')) as { token?: unknown };
    return typeof token === 'string' && token.length > 0 ? token : undefined;
  } catch {
    return undefined;
  }
}

function peekSubject(body: Buffer): KubernetesSubject | undefined {
  try {
    return readKubernetesSubject(decodeJwt(readToken(body) ?? ''));
  } catch {
    return undefined;
  }
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** Maps bytes onto the AWS key-id alphabet; the slight modulo bias is irrelevant here. */
const alnum = (bytes: Uint8Array): string => Array.from(bytes, (b) => ALNUM[b % ALNUM.length]).join('');
