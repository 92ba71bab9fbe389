import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { parseAllDocuments } from 'yaml';
import { parseInitializeArgs, parseServerArgs } from '../src/config/index.ts';

const run = promisify(execFile);
const kubectl = await run('kubectl', ['version', '--client']).then(
  () => true,
  () => false,
);
const ROOT = new URL('..', import.meta.url).pathname;

// Rendered manifests are untyped YAML; the assertions are the schema.
type Json = Record<string, any>;

async function render(dir: string): Promise<Json[]> {
  const { stdout } = await run('kubectl', ['kustomize', `${ROOT}${dir}`]);
  return parseAllDocuments(stdout).map((doc) => doc.toJSON() as Json);
}

/** $(VAR) references resolved from the generated ConfigMap, as the kubelet does. */
function expand(args: string[], env: Record<string, string>): string[] {
  return args.map((arg) => arg.replace(/\$\((\w+)\)/g, (_, name: string) => env[name] ?? `$(${name})`));
}

function checkDaemonSet(t: Test, objects: Json[]): { ds: Json; init: Json; agent: Json; env: Record<string, string> } {
  const ds = objects.find((o) => o.kind === 'DaemonSet') as Json;
  // The generated settings ConfigMap (pod-identity-agent-<hash>), not an overlay's own.
  const configMap = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('pod-identity-agent')) as Json;
  const pod = ds.spec.template.spec;
  const init = pod.initContainers.find((c: Json) => c.name === 'initialize') as Json;
  const stateDir = pod.initContainers.find((c: Json) => c.name === 'state-dir') as Json;
  const [agent] = pod.containers;
  const env = configMap.data as Record<string, string>;

  t.equal(pod.hostNetwork, true, 'hostNetwork');
  t.equal(pod.priorityClassName, 'system-node-critical');
  t.same(pod.tolerations, [{ operator: 'Exists' }], 'tolerates everything');
  t.same(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '10%' } });
  t.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  t.ok(objects.some((o) => o.kind === 'ServiceAccount' && o.metadata.name === pod.serviceAccountName), 'its own ServiceAccount');
  const role = objects.find((o) => o.kind === 'ClusterRole') as Json;
  t.same(role.rules, [
    { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
    { nonResourceURLs: ['/.well-known/openid-configuration', '/openid/v1/jwks'], verbs: ['get'] },
  ], 'RBAC only for what the agent reads');
  const binding = objects.find((o) => o.kind === 'ClusterRoleBinding') as Json;
  t.match(binding, { roleRef: { name: role.metadata.name }, subjects: [{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: ds.metadata.namespace }] });
  t.same(pod.initContainers.map((c: Json) => c.name), ['initialize', 'state-dir']);
  t.same(stateDir.securityContext.capabilities, { drop: ['ALL'], add: ['CHOWN', 'FOWNER'] }, 'state-dir: CHOWN and FOWNER only');
  t.equal(stateDir.securityContext.allowPrivilegeEscalation, false);
  t.equal(stateDir.securityContext.readOnlyRootFilesystem, true);
  t.match(stateDir.command.join(' '), /chown 65532:65532 \/var\/lib\/pod-identity-agent/);
  t.match(pod.volumes, [{ name: 'state', hostPath: { path: '/var/lib/pod-identity-agent', type: 'DirectoryOrCreate' } }]);

  t.equal(init.args[0], 'initialize');
  t.same(init.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] }, 'init: NET_ADMIN only');
  t.not(init.securityContext.privileged, true, 'init: not privileged');
  t.equal(init.securityContext.allowPrivilegeEscalation, false);
  t.equal(init.securityContext.readOnlyRootFilesystem, true);
  t.equal(init.securityContext.seccompProfile.type, 'RuntimeDefault');

  const security = agent.securityContext;
  t.equal(security.runAsNonRoot, true, 'agent: non-root');
  t.ok(security.runAsUser > 0, 'agent: a non-root uid');
  t.equal(security.allowPrivilegeEscalation, false);
  t.equal(security.readOnlyRootFilesystem, true);
  t.same(security.capabilities.drop, ['ALL']);
  t.ok((security.capabilities.add ?? []).every((cap: string) => cap === 'NET_BIND_SERVICE'), 'agent: nothing beyond NET_BIND_SERVICE');
  t.equal(security.seccompProfile.type, 'RuntimeDefault');
  t.match(agent.resources, { requests: { cpu: String, memory: String }, limits: { memory: String } });
  for (const [probe, path] of [['livenessProbe', '/healthz'], ['readinessProbe', '/readyz']] as const) {
    t.match(agent[probe].httpGet, { host: '127.0.0.1', path, port: 2703 }, `${probe} on the probe port`);
  }

  // Cluster name, region and port come from the one ConfigMap, and the rendered args parse.
  for (const container of [init, agent]) t.same(container.envFrom[0], { configMapRef: { name: configMap.metadata.name } });
  t.match(env, { CLUSTER_NAME: String, AWS_REGION: String, AGENT_PORT: /^\d+$/ });
  const serverArgs = expand(agent.args, env);
  t.equal(serverArgs[0], 'server');
  // NODE_NAME as the downward API sets it.
  const server = parseServerArgs(serverArgs.slice(1), { ...env, NODE_NAME: 'node-a' }).config;
  t.ok(server, 'the agent\'s args are valid flags');
  t.same(agent.env, [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }], 'the node name from the downward API');
  t.match(agent.volumeMounts, [{ name: 'state', mountPath: server?.stateDir }], 'the state directory is the mounted host path');
  t.equal(security.runAsUser, 65532, 'the uid the state directory is handed to');
  const initialize = parseInitializeArgs(expand(init.args, env).slice(1)).config;
  t.equal(initialize?.redirectPort, server?.port, 'port 80 is redirected to the port the agent listens on');
  t.ok(pod.terminationGracePeriodSeconds * 1000 > (server?.shutdownTimeoutMs ?? Infinity), 'the agent\'s shutdown deadline ends inside the grace period');
  return { ds, init, agent, env };
}

t.test('base', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const { ds, agent } = checkDaemonSet(t, await render('daemonset'));
  const annotations = ds.spec.template.metadata.annotations;
  t.same(annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '2705', 'prometheus.io/path': '/metrics' });
  t.ok(agent.args.includes('--metrics-port=2705'), 'the annotated port is the metrics port');
});

t.test('overlay: another agent port', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const { env } = checkDaemonSet(t, await render('daemonset/overlays/agent-port'));
  t.equal(env.AGENT_PORT, '2710');
});

t.test('overlay: IPv4-only clusters', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const objects = await render('daemonset/overlays/ipv4-only');
  const { init, agent, env } = checkDaemonSet(t, objects);
  t.ok(init.args.includes('--no-ipv6'));
  t.same(parseServerArgs(expand(agent.args, env).slice(1), env).config?.bindHosts, ['169.254.170.23']);
});

t.test('overlay: metrics disabled', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const { ds, agent, env } = checkDaemonSet(t, await render('daemonset/overlays/no-metrics'));
  t.equal(parseServerArgs(expand(agent.args, env).slice(1), env).config?.metrics, false);
  t.equal(ds.spec.template.metadata.annotations, undefined, 'nothing for Prometheus to scrape');
  t.equal(agent.ports, undefined);
});

t.test('overlay: self-managed clusters (STS upstream, associations ConfigMap)', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const objects = await render('daemonset/overlays/self-managed');
  const { ds, agent, env } = checkDaemonSet(t, objects);
  const server = parseServerArgs(expand(agent.args, env).slice(1), { ...env, NODE_NAME: 'node-a' }).config;
  t.equal(server?.upstream, 'sts');
  t.equal(server?.tokenVerification, 'jwks', 'verification explicit: never started without it');
  t.equal(server?.podBinding, 'on');
  const ref = server?.sts?.associations.configMap;
  t.same(ref, { namespace: ds.metadata.namespace, name: 'pod-identity-associations' }, 'the ConfigMap in the agent\'s namespace');
  t.notOk(objects.some((o) => o.kind === 'ConfigMap' && o.metadata.name === ref?.name), 'not rendered: re-applying the overlay must not reset the associations');
  const associations = parseAllDocuments(await readFile(`${ROOT}daemonset/overlays/self-managed/associations.example.yaml`, 'utf8'))[0]?.toJSON() as Json;
  t.match(associations.metadata, { name: ref?.name, namespace: ref?.namespace }, 'the example is the ConfigMap the agent watches');
  const { parseAssociations } = await import('../src/associations/association.ts');
  for (const [key, text] of Object.entries(associations.data as Record<string, string>)) {
    t.same(parseAssociations(text, key).problems, [], `${key} is a valid associations document`);
  }
  const role = objects.find((o) => o.kind === 'Role') as Json;
  t.same(role.rules, [{ apiGroups: [''], resources: ['configmaps'], resourceNames: [ref?.name], verbs: ['get', 'list', 'watch'] }], 'read access to that one ConfigMap only');
  t.equal(role.metadata.namespace, ref?.namespace);
  const binding = objects.find((o) => o.kind === 'RoleBinding') as Json;
  t.match(binding, { metadata: { namespace: ref?.namespace }, roleRef: { kind: 'Role', name: role.metadata.name }, subjects: [{ kind: 'ServiceAccount', name: ds.spec.template.spec.serviceAccountName, namespace: ds.metadata.namespace }] });
  t.same(agent.envFrom[1], { secretRef: { name: 'pod-identity-agent-aws-credentials', optional: true } }, 'the agent\'s own AWS keys where there is no instance profile');
});
