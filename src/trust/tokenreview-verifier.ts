import type { KubeConfig } from '@kubernetes/client-node';
import { apiCall } from '../k8s/api-request.ts';
import { type AgentError, agentError, isAgentError } from '../errors.ts';
import { type TokenVerifier, VerdictMemo } from './verifier.ts';
import type { VerifiedIdentity } from '../token/identity.ts';

const VERDICT_TTL_MS = 60_000;

/**
 * Verification by the API server's TokenReview, for clusters whose issuer keys are not readable.
 * It also proves the pod still exists. Verdicts are remembered for a minute.
 */
export function tokenReviewVerifier(kubeConfig: KubeConfig, audience: string): TokenVerifier {
  const memo = new VerdictMemo(4096, VERDICT_TTL_MS);
  return {
    mode: 'tokenreview',
    cached: (token, now) => memo.get(token, now),
    async verify(token, now) {
      let verdict: VerifiedIdentity | AgentError;
      try {
        const body = { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: token.raw, audiences: [audience] } };
        const review = await apiCall<{ status?: ReviewStatus }>(kubeConfig, { method: 'POST', path: '/apis/authentication.k8s.io/v1/tokenreviews', body });
        verdict = identityOf(review.status);
      } catch (error) {
        if (isAgentError(error)) verdict = error;
        else throw agentError('TokenReviewUnavailable', `the API server could not review the token (${(error as Error).message})`, { cause: error });
      }
      memo.remember(token, verdict, now, VERDICT_TTL_MS);
      if (verdict instanceof Error) throw verdict;
      return verdict;
    },
  };
}

type ReviewStatus = { authenticated?: boolean; user?: { username?: string; extra?: Record<string, string[]> } } | undefined;

function identityOf(status: ReviewStatus): VerifiedIdentity {
  if (status?.authenticated !== true) throw agentError('TokenNotAuthenticated', 'the API server did not authenticate the token');
  const match = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(status.user?.username ?? '');
  const podName = status.user?.extra?.['authentication.kubernetes.io/pod-name']?.[0];
  const podUid = status.user?.extra?.['authentication.kubernetes.io/pod-uid']?.[0];
  if (match === null || podName === undefined || podUid === undefined) {
    throw agentError('TokenClaimsInvalid', 'the token is not a pod-bound service-account token');
  }
  return { namespace: match[1] as string, serviceAccount: match[2] as string, podName, podUid };
}
