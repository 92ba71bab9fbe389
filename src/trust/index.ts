import type { Logger } from 'pino';
import { jwksVerifier } from './jwks-verifier.ts';
import { tokenReviewVerifier } from './tokenreview-verifier.ts';
import type { TokenVerifier } from './verifier.ts';
import type { LoadedKubeConfig } from '../k8s/kube-config.ts';
import { type PodIndex, watchNodePods } from '../k8s/pod-index.ts';
import { issuerKeys } from './issuer-keys.ts';

/** What the cluster lets the agent check: token verification and pod binding, each possibly off. */
export interface Trust {
  readonly verifier: TokenVerifier | undefined;
  readonly pods: PodIndex | undefined;
  close(): Promise<void>;
}

/** The few settings trust is decided by (from --token-verification, --pod-binding and friends). */
export interface TrustSettings {
  /** auto: jwks when the API server answers (or keys are stored), else none with a warning. */
  readonly tokenVerification: 'auto' | 'jwks' | 'tokenreview' | 'none';
  /** auto: on when tokens are verified and the node name is known. */
  readonly podBinding: 'auto' | 'on' | 'off';
  readonly nodeName: string | undefined;
  /** Where the last good issuer keys are kept. */
  readonly stateDir: string;
  readonly audience: string;
}

/** The line that says what --token-verification and --pod-binding resolved to (the start-up line shows `auto` pointing here). */
const TRUST_SET_UP = 'Kubernetes trust set up';

export interface TrustOptions {
  readonly settings: TrustSettings;
  readonly kube: LoadedKubeConfig | undefined;
  readonly logger: Logger;
  /** Called when a pod of this node is deleted. */
  readonly onPodDeleted: (uid: string) => void;
  readonly startTimeoutMs?: number;
}

/**
 * Resolves --token-verification and --pod-binding against what is there: with no Kubernetes
 * configuration at all, both are off (one warning; never a default localhost:8080); `auto` means
 * on when the API server answers or keys from an earlier run are stored. An explicit mode that
 * cannot work is a start-up error.
 */
export async function setUpTrust(options: TrustOptions): Promise<Trust> {
  const { settings: config, kube, logger } = options;
  if (kube === undefined) {
    if (config.tokenVerification === 'jwks' || config.tokenVerification === 'tokenreview' || config.podBinding === 'on') {
      throw new Error(`--token-verification ${config.tokenVerification} / --pod-binding ${config.podBinding} need the Kubernetes API, and no configuration was found (in-cluster, KUBECONFIG, ~/.kube/config)`);
    }
    logger.warn('no Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config): tokens are not verified locally and not bound to pods');
    logger.info({ kubeconfig: 'none', tokenVerification: 'none', podBinding: 'off', node: config.nodeName }, TRUST_SET_UP);
    return { verifier: undefined, pods: undefined, close: async () => undefined };
  }

  // Listed alongside the keys, which the list does not need: the credential listeners wait for both.
  // Let go of again should `auto` end without a verifier.
  const mayBind = config.podBinding === 'on' || (config.podBinding === 'auto' && config.tokenVerification !== 'none');
  const listing = mayBind && config.nodeName !== undefined ? watchNodePods({ kubeConfig: kube.kubeConfig, nodeName: config.nodeName, logger, onDelete: options.onPodDeleted }) : undefined;
  const keys = config.tokenVerification === 'jwks' || config.tokenVerification === 'auto' ? issuerKeys({ kubeConfig: kube.kubeConfig, stateDir: config.stateDir, logger }) : undefined;
  let verifier: TokenVerifier | undefined;
  if (config.tokenVerification === 'tokenreview') verifier = tokenReviewVerifier(kube.kubeConfig, config.audience);
  if (keys !== undefined) {
    const loaded = await keys.start(options.startTimeoutMs ?? 5000);
    if (loaded !== undefined || config.tokenVerification === 'jwks') verifier = jwksVerifier(keys, config.audience);
    else logger.warn({ kubeconfig: kube.source }, 'the API server did not answer and no issuer keys are stored: tokens are not verified locally');
  }

  const bind = config.podBinding === 'on' || (config.podBinding === 'auto' && verifier !== undefined && config.nodeName !== undefined);
  const pods: PodIndex | undefined = bind ? listing : undefined;
  if (pods === undefined) await listing?.close();
  if (!bind && config.podBinding === 'auto' && verifier !== undefined) {
    logger.warn('the node name is unknown (--node-name or NODE_NAME): tokens are verified but not bound to this node\'s pods');
  }
  logger.info({ kubeconfig: kube.source, tokenVerification: verifier?.mode ?? 'none', podBinding: pods === undefined ? 'off' : 'on', node: config.nodeName }, TRUST_SET_UP);
  return {
    verifier,
    pods,
    async close() {
      keys?.close();
      await pods?.close();
    },
  };
}
