import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';

export type KubeConfigSource = 'in-cluster' | 'KUBECONFIG' | '~/.kube/config';

export interface LoadedKubeConfig {
  readonly kubeConfig: KubeConfig;
  readonly source: KubeConfigSource;
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * The API server's configuration: in-cluster service account, else $KUBECONFIG, else
 * ~/.kube/config; undefined when there is none. Unlike `loadFromDefault`, never falls back to
 * an unauthenticated localhost:8080.
 */
export function loadKubeConfig(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): LoadedKubeConfig | undefined {
  const kubeConfig = new KubeConfig();
  if (env.KUBERNETES_SERVICE_HOST !== undefined && existsSync(SERVICE_ACCOUNT_TOKEN)) {
    kubeConfig.loadFromCluster();
    return { kubeConfig, source: 'in-cluster' };
  }
  const path = env.KUBECONFIG?.split(':').find((candidate) => candidate !== '' && existsSync(candidate));
  if (path !== undefined) {
    kubeConfig.loadFromFile(path);
    return { kubeConfig, source: 'KUBECONFIG' };
  }
  const homeConfig = join(home, '.kube', 'config');
  if (existsSync(homeConfig)) {
    kubeConfig.loadFromFile(homeConfig);
    return { kubeConfig, source: '~/.kube/config' };
  }
  return undefined;
}
