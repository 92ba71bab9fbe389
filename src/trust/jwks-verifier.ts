import { createLocalJWKSet, errors, jwtVerify, type JWTPayload } from 'jose';
import { AgentError, agentError, isAgentError } from '../errors.ts';
import type { IssuerKeys } from './issuer-keys.ts';
import type { ProjectedToken } from '../token/projected-token.ts';
import { type TokenVerifier, VerdictMemo } from './verifier.ts';
import type { VerifiedIdentity } from '../token/identity.ts';

const ALGORITHMS = ['RS256', 'ES256', 'ES384', 'ES512'];

/**
 * Signature (with jose), issuer, audience, validity and the kubernetes.io claims, against the keys
 * the API server published. An unknown kid reloads the keys (rate-limited) once before refusing.
 */
export function jwksVerifier(keys: IssuerKeys, audience: string): TokenVerifier {
  const memo = new VerdictMemo();
  let keySet: { source: object; verify: ReturnType<typeof createLocalJWKSet> } | undefined;
  const currentKeySet = () => {
    const current = keys.current();
    if (current === undefined) return undefined;
    if (keySet?.source !== current) keySet = { source: current, verify: createLocalJWKSet(current.jwks) };
    return { issuer: current.issuer, verify: keySet.verify };
  };

  // Throws jose's own errors, so that an unknown kid can be told apart from a bad signature.
  async function attempt(token: ProjectedToken, now: number): Promise<VerifiedIdentity> {
    const set = currentKeySet();
    if (set === undefined) throw agentError('TokenKeysUnavailable', 'the cluster\'s signing keys are not known yet: the API server has not been reachable');
    const { payload } = await jwtVerify(token.raw, set.verify, { issuer: set.issuer, audience, algorithms: ALGORITHMS, clockTolerance: 60, currentDate: new Date(now) });
    return identityOf(payload);
  }

  async function attemptWithKeyRefresh(token: ProjectedToken, now: number): Promise<VerifiedIdentity> {
    try {
      return await attempt(token, now);
    } catch (error) {
      // A kid nobody knows may be a key the cluster just rotated in: reload once, then decide.
      if (error instanceof errors.JWKSNoMatchingKey && (await keys.refreshForUnknownKid())) return attempt(token, now);
      throw error;
    }
  }

  return {
    mode: 'jwks',
    cached: (token, now) => memo.get(token, now),
    async verify(token, now) {
      try {
        const identity = await attemptWithKeyRefresh(token, now);
        memo.remember(token, identity, now);
        return identity;
      } catch (error) {
        const verdict = verdictOf(error);
        if (!verdict.retryable) memo.remember(token, verdict, now);
        throw verdict;
      }
    },
  };
}

function verdictOf(error: unknown): AgentError {
  if (isAgentError(error)) return error;
  if (error instanceof errors.JWKSNoMatchingKey) return agentError('TokenSignatureInvalid', 'the token\'s kid names none of the cluster\'s signing keys');
  if (error instanceof errors.JWSSignatureVerificationFailed) return agentError('TokenSignatureInvalid', 'the token\'s signature does not verify against the cluster\'s keys');
  if (error instanceof errors.JWTExpired) return agentError('TokenExpired', 'the token has expired');
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'iss') return agentError('TokenIssuerMismatch', 'the token was not issued by this cluster\'s service-account issuer');
    if (error.claim === 'aud') return agentError('InvalidAudience', 'the token\'s audience is not the expected one');
    if (error.claim === 'nbf') return agentError('TokenNotYetValid', 'the token is not valid yet');
    return agentError('TokenClaimsInvalid', `the token's ${error.claim} claim is invalid`);
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) return agentError('TokenSignatureInvalid', 'the token is signed with an algorithm the agent does not accept');
  if (error instanceof errors.JOSEError) return agentError('TokenSignatureInvalid', `the token could not be verified (${error.code})`);
  return new AgentError('InternalError', 500, 'token verification failed', { cause: error });
}

function identityOf(payload: JWTPayload): VerifiedIdentity {
  const k8s = payload['kubernetes.io'] as { namespace?: unknown; serviceaccount?: { name?: unknown }; pod?: { name?: unknown; uid?: unknown } } | undefined;
  const identity = { namespace: k8s?.namespace, serviceAccount: k8s?.serviceaccount?.name, podName: k8s?.pod?.name, podUid: k8s?.pod?.uid };
  if (!Object.values(identity).every((value) => typeof value === 'string' && value !== '')) {
    throw agentError('TokenClaimsInvalid', 'the token lacks the kubernetes.io namespace, service account or pod claims');
  }
  if (payload.sub !== `system:serviceaccount:${identity.namespace}:${identity.serviceAccount}`) {
    throw agentError('TokenClaimsInvalid', 'the token\'s sub does not match its kubernetes.io claims');
  }
  return identity as VerifiedIdentity;
}
