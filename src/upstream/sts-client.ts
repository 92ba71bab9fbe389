import { randomUUID } from 'node:crypto';
import { AssumeRoleCommand, type AssumeRoleCommandInput, type AssumeRoleCommandOutput, STSClient } from '@aws-sdk/client-sts';
import type { Dispatcher } from 'undici';
import type { Association } from '../associations/association.ts';
import type { AssociationLookup } from '../associations/association-table.ts';
import { AgentError, agentError, isAgentError } from '../errors.ts';
import type { VerifiedIdentity } from '../token/identity.ts';
import type { NodeCredentials } from './node-credentials.ts';
import type { CredentialExchange, ExchangeLayer, ExchangeResult } from './types.ts';
import { UndiciHttpHandler } from './undici-http-handler.ts';

export interface StsClientOptions {
  readonly region: string;
  /** An explicit endpoint (--endpoint); otherwise the SDK's own resolution (regional, AWS_ENDPOINT_URL_STS). */
  readonly endpoint: URL | undefined;
  readonly clusterName: string;
  /** Sent as the eks-cluster-arn tag when set; a cluster outside EKS has none. */
  readonly clusterArn: string | undefined;
  readonly associations: AssociationLookup;
  /** The agent's own credentials: they call AssumeRole, so the target roles must trust them. */
  readonly credentials: NodeCredentials;
  /** A keep-alive pool shared by all calls; the caller owns and closes it. */
  readonly dispatcher: Dispatcher;
  readonly userAgent: string;
}

const SERVICE = 'STS';

/**
 * The EKS Pod Identity exchange for clusters outside EKS: the agent, trusting its own token
 * verification, looks up the service account's association and calls AssumeRole itself, with the
 * session name and session tags EKS would use, so that policies written for EKS work unchanged.
 * One attempt per call, as the EKS Auth client; the retry layer and the association gate
 * (requireAssociation) wrap it.
 */
export function createStsClient(options: StsClientOptions): CredentialExchange {
  const client = new STSClient({
    region: options.region,
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint.href }),
    credentials: options.credentials,
    requestHandler: new UndiciHttpHandler(options.dispatcher, SERVICE),
    maxAttempts: 1,
    customUserAgent: options.userAgent,
  });

  return {
    name: SERVICE,
    async exchange({ identity }, exchangeOptions) {
      const verified = verifiedOnly(identity);
      const input = assumeRoleInput(options, associationOf(options.associations, options.clusterName, verified), verified);
      let output: AssumeRoleCommandOutput;
      try {
        output = await client.send(new AssumeRoleCommand(input), { abortSignal: exchangeOptions?.signal });
      } catch (error) {
        throw stsError(error, input.RoleArn ?? '');
      }
      return toResult(output);
    },
  };
}

/**
 * The gate in front of the retries: a token without an association (or, until every source is
 * read, without one known yet) is answered at once, never retried.
 */
export function requireAssociation(associations: AssociationLookup, clusterName: string): ExchangeLayer {
  return (inner) => ({
    name: inner.name,
    exchange(request, options) {
      try {
        associationOf(associations, clusterName, verifiedOnly(request.identity));
      } catch (error) {
        return Promise.reject(error);
      }
      return inner.exchange(request, options);
    },
  });
}

function verifiedOnly(identity: VerifiedIdentity | undefined): VerifiedIdentity {
  if (identity === undefined) throw agentError('InternalError', 'the STS upstream was asked for an unverified token');
  return identity;
}

function associationOf(associations: AssociationLookup, clusterName: string, identity: VerifiedIdentity): Association {
  const association = associations.find(identity.namespace, identity.serviceAccount);
  if (association !== undefined) return association;
  const account = `${identity.namespace}/${identity.serviceAccount}`;
  if (!associations.complete) throw agentError('AssociationsUnavailable', `the associations have not all been read yet, and none found so far is for service account ${account}; try again shortly`);
  // What EKS Auth answers for a service account without an association, so SDKs and operators see the same.
  throw new AgentError('ResourceNotFoundException', 404, `no pod identity association for service account ${account} in cluster ${clusterName}`, { retryable: false });
}

export function assumeRoleInput(options: Pick<StsClientOptions, 'clusterName' | 'clusterArn'>, association: Association, identity: VerifiedIdentity): AssumeRoleCommandInput {
  const tags = association.disableSessionTags ? [] : sessionTags(options.clusterName, options.clusterArn, identity);
  return {
    RoleArn: association.roleArn,
    RoleSessionName: roleSessionName(options.clusterName, identity.podName),
    ...(association.sessionDurationSeconds === undefined ? {} : { DurationSeconds: association.sessionDurationSeconds }),
    ...(association.externalId === undefined ? {} : { ExternalId: association.externalId }),
    ...(association.policy === undefined ? {} : { Policy: association.policy }),
    ...(tags.length === 0 ? {} : { Tags: tags, TransitiveTagKeys: tags.map((tag) => tag.Key) }),
  };
}

/**
 * The tags EKS Pod Identity sets, all transitive as EKS makes them, so that a role chained from
 * these credentials carries them too. eks-cluster-arn only when the cluster has one (--cluster-arn).
 */
export function sessionTags(clusterName: string, clusterArn: string | undefined, identity: VerifiedIdentity): { Key: string; Value: string }[] {
  return [
    ...(clusterArn === undefined ? [] : [{ Key: 'eks-cluster-arn', Value: clusterArn }]),
    { Key: 'eks-cluster-name', Value: clusterName },
    { Key: 'kubernetes-namespace', Value: identity.namespace },
    { Key: 'kubernetes-service-account', Value: identity.serviceAccount },
    { Key: 'kubernetes-pod-name', Value: identity.podName },
    { Key: 'kubernetes-pod-uid', Value: identity.podUid },
  ];
}

// STS allows 64 characters; "eks-", two dashes and a UUID leave 22 for the cluster and pod names.
const NAMES_BUDGET = 64 - 'eks-'.length - 2 - 36;
const MIN_CLUSTER_CHARS = 6;

/**
 * EKS's form, `eks-<cluster>-<pod>-<uuid>`, within STS's 64 characters. When the names are too
 * long, the cluster's is cut first (it is in the tags, and the same for every session) and the
 * pod's after; the UUID, which tells sessions apart in CloudTrail, always fits whole.
 */
export function roleSessionName(clusterName: string, podName: string, uuid: string = randomUUID()): string {
  let cluster = clusterName;
  let pod = podName;
  if (cluster.length + pod.length > NAMES_BUDGET) {
    cluster = cluster.slice(0, Math.max(MIN_CLUSTER_CHARS, NAMES_BUDGET - pod.length));
    pod = pod.slice(0, NAMES_BUDGET - cluster.length);
  }
  return `eks-${cluster}-${pod}-${uuid}`.replace(/[^\w+=,.@-]/g, '-');
}

function toResult(output: AssumeRoleCommandOutput): ExchangeResult {
  const requestId = output.$metadata.requestId;
  const credentials = output.Credentials;
  const expiresAt = credentials?.Expiration?.getTime();
  if (credentials?.AccessKeyId === undefined || credentials.SecretAccessKey === undefined || credentials.SessionToken === undefined || expiresAt === undefined || !Number.isFinite(expiresAt)) {
    throw agentError('UpstreamInvalidResponse', 'STS answered AssumeRole without complete credentials', { upstreamRequestId: requestId });
  }
  const account = output.AssumedRoleUser?.Arn?.split(':')[4];
  return {
    credentials: {
      accessKeyId: credentials.AccessKeyId,
      secretAccessKey: credentials.SecretAccessKey,
      sessionToken: credentials.SessionToken,
      accountId: account !== undefined && /^\d{12}$/.test(account) ? account : undefined,
      expiresAt,
    },
    requestId,
  };
}

interface PodFacingError {
  readonly code: string;
  readonly status: number;
  readonly retryable: boolean;
  readonly hint?: string;
}

const THROTTLED: PodFacingError = { code: 'ThrottlingException', status: 429, retryable: true };
const DENIED: PodFacingError = { code: 'AccessDeniedException', status: 400, retryable: false, hint: 'the role must trust the agent\'s role with sts:AssumeRole and sts:TagSession (and the external id, where set)' };
const INVALID: PodFacingError = { code: 'InvalidParameterException', status: 400, retryable: false, hint: 'check the association' };

/**
 * STS's Query-protocol error codes, answered to pods as the EKS Auth codes and statuses for the
 * same situation, so that SDK retries, the cache's treatment and dashboards are the same.
 */
const STS_ERRORS: Readonly<Record<string, PodFacingError>> = {
  Throttling: THROTTLED,
  ThrottlingException: THROTTLED,
  RequestLimitExceeded: THROTTLED,
  AccessDenied: DENIED,
  AccessDeniedException: DENIED,
  RegionDisabledException: { code: 'AccessDeniedException', status: 400, retryable: false, hint: 'STS is not activated for this region in the role\'s account' },
  MalformedPolicyDocument: INVALID,
  MalformedPolicyDocumentException: INVALID,
  PackedPolicyTooLarge: { ...INVALID, hint: 'the session policy and tags are too large once packed' },
  PackedPolicyTooLargeException: { ...INVALID, hint: 'the session policy and tags are too large once packed' },
  ValidationError: { ...INVALID, hint: 'a sessionDuration above the role\'s maximum session duration, or above 1h when the agent itself runs on role credentials (role chaining), is the usual cause' },
  InvalidParameterValue: INVALID,
  InvalidParameterCombination: INVALID,
  MissingParameter: INVALID,
  // The agent's own credentials, not the pod's: the chain refreshes expired ones, so worth retrying.
  ExpiredToken: { code: 'NodeCredentialsUnavailable', status: 503, retryable: true, hint: 'STS refused the agent\'s credentials as expired' },
  ExpiredTokenException: { code: 'NodeCredentialsUnavailable', status: 503, retryable: true, hint: 'STS refused the agent\'s credentials as expired' },
  // Also the agent's, not the pod's (a key being rotated, say): retryable, so cached credentials
  // stand in and nothing is remembered against the pods meanwhile.
  InvalidClientTokenId: { code: 'UnrecognizedClientException', status: 403, retryable: true, hint: 'STS does not know the agent\'s access key' },
  SignatureDoesNotMatch: { code: 'InvalidSignatureException', status: 403, retryable: true, hint: 'the agent\'s secret key does not match its access key' },
  InternalFailure: { code: 'InternalServerException', status: 500, retryable: true },
  InternalError: { code: 'InternalServerException', status: 500, retryable: true },
  ServiceUnavailable: { code: 'ServiceUnavailableException', status: 503, retryable: true },
};

/** STS refusing the agent's own credentials: /readyz turns not ready until a call succeeds. */
const NODE_REFUSED = new Set(['ExpiredToken', 'ExpiredTokenException', 'InvalidClientTokenId', 'SignatureDoesNotMatch']);

/** An STS error code as it may be shown: anything else is replaced by the status. */
const ERROR_CODE = /^[A-Za-z][A-Za-z0-9]{0,63}$/;

/** An SDK failure as the AgentError a pod gets; network failures and timeouts go to withRetry as they are. */
function stsError(error: unknown, roleArn: string): unknown {
  if (isAgentError(error)) return error;
  const failure = error as { name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number; requestId?: string } };
  const status = failure.$metadata?.httpStatusCode;
  if (status === undefined) return error;
  const upstreamRequestId = failure.$metadata?.requestId;
  const name = typeof failure.name === 'string' && ERROR_CODE.test(failure.name) ? failure.name : undefined;
  const detail = typeof failure.message === 'string' && failure.message !== '' ? failure.message.slice(0, 512) : `STS answered ${status}`;
  if (status < 300) return agentError('UpstreamInvalidResponse', 'STS answered AssumeRole with something that is not a valid response', { upstreamRequestId, detail: detail.slice(0, 200) });
  const mapped = (name === undefined ? undefined : STS_ERRORS[name]) ?? byStatus(status, name);
  const hint = mapped.hint === undefined ? '' : `: ${mapped.hint}`;
  // STS's own words name the agent's identity (role, instance id): the log gets them, the pod does not.
  const nodeCredentialsRejected = name !== undefined && NODE_REFUSED.has(name);
  return new AgentError(mapped.code, mapped.status, `STS refused AssumeRole for ${roleArn} with ${name ?? status}${hint}`, { retryable: mapped.retryable, upstreamRequestId, detail, nodeCredentialsRejected });
}

function byStatus(status: number, name: string | undefined): PodFacingError {
  if (status === 429) return THROTTLED;
  if (status === 503) return { code: 'ServiceUnavailableException', status, retryable: true };
  if (status >= 500) return { code: 'InternalServerException', status: 500, retryable: true };
  return { code: name ?? 'UpstreamError', status: status >= 400 && status < 500 ? status : 502, retryable: false };
}
