import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigError, parseInitializeArgs, parseServerArgs } from '../src/config/index.ts';
import { DAEMONSET, FILLED, type Json, kubectl, kustomize, kustomizeError, overlayError, readExample, renderOverlay, settingsOf } from './helpers/overlay.ts';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const needsKubectl = { skip: kubectl ? false : 'kubectl is not installed' };

/** $(VAR) references resolved from the generated ConfigMap, as the kubelet does. */
function expand(args: string[], env: Record<string, string>): string[] {
  return args.map((arg) => arg.replace(/\$\((\w+)\)/g, (_, name: string) => env[name] ?? `$(${name})`));
}

/** Whether a pod with these tolerations may run on a node with this taint (the scheduler's rule). */
function tolerates(tolerations: Json[], taint: { key: string; value?: string; effect: string }): boolean {
  return tolerations.some((toleration) => {
    if (toleration.effect !== undefined && toleration.effect !== taint.effect) return false;
    if (toleration.key !== undefined && toleration.key !== taint.key) return false;
    return toleration.operator === 'Exists' || toleration.value === taint.value;
  });
}

/** Whether a node with these labels satisfies a required node affinity (the scheduler's rule: any term, every expression). */
function schedulable(affinity: Json | undefined, labels: Record<string, string>): boolean {
  const terms = (affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? []) as Json[];
  if (terms.length === 0) return true;
  return terms.some((term) => (term.matchExpressions as Json[]).every(({ key, operator, values = [] }: Json) => {
    const value = labels[key as string];
    switch (operator) {
      case 'In': return value !== undefined && (values as string[]).includes(value);
      case 'NotIn': return value === undefined || !(values as string[]).includes(value);
      case 'Exists': return value !== undefined;
      case 'DoesNotExist': return value === undefined;
      default: throw new Error(`operator ${operator as string} not modelled`);
    }
  }));
}

/** Nodes by what the scheduler sees of them: the kubelet's os and arch labels, EKS's compute-type. */
const NODES: Record<string, Record<string, string>> = {
  'EC2 node, amd64': { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', 'eks.amazonaws.com/compute-type': 'ec2' },
  'EC2 node, arm64 (Graviton)': { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'arm64' },
  'self-managed cluster\'s node (no compute-type label)': { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64' },
  'Windows node': { 'kubernetes.io/os': 'windows', 'kubernetes.io/arch': 'amd64' },
  'Fargate': { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', 'eks.amazonaws.com/compute-type': 'fargate' },
  'EKS hybrid node': { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', 'eks.amazonaws.com/compute-type': 'hybrid' },
  'EKS Auto Mode node': { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'arm64', 'eks.amazonaws.com/compute-type': 'auto' },
  'another architecture (s390x)': { 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 's390x' },
};
const RUNS_ON = ['EC2 node, amd64', 'EC2 node, arm64 (Graviton)', 'self-managed cluster\'s node (no compute-type label)'];

/** Linux, amd64 or arm64, not Fargate, hybrid or Auto Mode: the EKS add-on's own DaemonSet affinity. */
function checkAffinity(t: Test, pod: Json): void {
  t.same(pod.affinity, {
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{
          matchExpressions: [
            { key: 'kubernetes.io/os', operator: 'In', values: ['linux'] },
            { key: 'kubernetes.io/arch', operator: 'In', values: ['amd64', 'arm64'] },
            { key: 'eks.amazonaws.com/compute-type', operator: 'NotIn', values: ['fargate', 'hybrid', 'auto'] },
          ],
        }],
      },
    },
  }, 'the add-on\'s node affinity');
  const placed = Object.keys(NODES).filter((node) => schedulable(pod.affinity, NODES[node]!));
  t.same(placed, RUNS_ON, 'scheduled on Linux amd64 and arm64 nodes only, never on Windows, Fargate, hybrid or Auto Mode nodes');
}

/** The admission policy narrowing the agent's node RBAC: the agent's own Node, its startup taint, nothing else. */
function checkAdmissionPolicy(t: Test, objects: Json[], ds: Json, startupTaint: string | undefined): void {
  const policy = objects.find((o) => o.kind === 'ValidatingAdmissionPolicy') as Json | undefined;
  const binding = objects.find((o) => o.kind === 'ValidatingAdmissionPolicyBinding') as Json | undefined;
  if (policy === undefined || binding === undefined) {
    t.fail('the admission policy and its binding are rendered');
    return;
  }
  for (const object of [policy, binding]) t.equal(object.apiVersion, 'admissionregistration.k8s.io/v1', `${object.kind}: the GA API (Kubernetes 1.30+)`);
  t.match(binding.spec, { policyName: policy.metadata.name, validationActions: ['Deny'] }, 'bound, denying');
  t.notOk('matchResources' in binding.spec || 'paramRef' in binding.spec, 'for every request it matches');
  t.equal(policy.spec.failurePolicy, 'Fail', 'an expression that fails denies');
  t.same(policy.spec.matchConstraints.resourceRules, [{ apiGroups: [''], apiVersions: ['*'], operations: ['CREATE', 'UPDATE', 'DELETE'], resources: ['nodes'] }]);
  const serviceAccount = `system:serviceaccount:${ds.metadata.namespace}:${ds.spec.template.spec.serviceAccountName}`;
  t.same(policy.spec.matchConditions.map((c: Json) => c.expression), [`request.userInfo.username == '${serviceAccount}'`], 'only the agent\'s own ServiceAccount, as the DaemonSet runs it');
  const variables = new Map<string, string>(policy.spec.variables.map((v: Json) => [v.name, v.expression]));
  const expressions = [...variables.values(), ...policy.spec.validations.map((v: Json) => v.expression as string)].join('\n');
  t.match(variables.get('tokenNodeNames'), /request\.userInfo\.extra\['authentication\.kubernetes\.io\/node-name'\]/, 'the node comes from the token\'s node-name claim');
  t.match(expressions, /variables\.tokenNodeNames\.exists\(name, name == oldObject\.metadata\.name\)/, 'and must be the Node written');
  t.equal(variables.get('startupTaintKey'), `'${startupTaint}'`, 'the taint it may remove is the agent\'s --startup-taint');
  t.ok(policy.spec.validations.every((v: Json) => v.reason === 'Forbidden' && typeof v.message === 'string'), 'each denial says why, as 403');
}

function checkDaemonSet(t: Test, objects: Json[], { admissionPolicy = true }: { admissionPolicy?: boolean } = {}): { ds: Json; init: Json; agent: Json; watcher: Json; env: Record<string, string> } {
  const ds = objects.find((o) => o.kind === 'DaemonSet') as Json;
  // The ConfigMap the base generates (pod-identity-agent-<hash>), which the containers read.
  const configMap = objects.find((o) => o.kind === 'ConfigMap' && /^pod-identity-agent-[a-z0-9]{10}$/.test(o.metadata.name)) as Json;
  const pod = ds.spec.template.spec;
  const init = pod.initContainers.find((c: Json) => c.name === 'initialize') as Json;
  const stateDir = pod.initContainers.find((c: Json) => c.name === 'state-dir') as Json;
  const [agent, watcher] = pod.containers;
  const env = configMap.data as Record<string, string>;

  // The operator's settings, where the agent reads them, and the settings themselves never applied.
  t.notOk(objects.some((o) => o.metadata.name.startsWith('pod-identity-agent-settings')), 'the settings ConfigMap is local to the render: not applied');
  t.match(env, { CLUSTER_NAME: FILLED.CLUSTER_NAME, AWS_REGION: FILLED.AWS_REGION }, 'the cluster name and region from the overlay\'s settings');
  for (const container of [...pod.initContainers, ...pod.containers]) t.equal(container.image, FILLED.IMAGE, `${container.name}: the overlay's image`);
  checkAffinity(t, pod);

  t.equal(pod.hostNetwork, true, 'hostNetwork');
  t.equal(pod.priorityClassName, 'system-node-critical');
  t.same(pod.tolerations, [{ operator: 'Exists' }], 'tolerates everything');
  // Surge: the new agent starts beside the old one on the same ports; the old one goes once the new one is ready.
  t.same(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }, 'surge rollout');
  for (const container of [...pod.initContainers, ...pod.containers]) {
    t.equal(container.ports, undefined, `${container.name}: no containerPort (on the host network each is a host port, and the surge pod would not be scheduled)`);
  }
  t.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  t.ok(objects.some((o) => o.kind === 'ServiceAccount' && o.metadata.name === pod.serviceAccountName), 'its own ServiceAccount');
  const role = objects.find((o) => o.kind === 'ClusterRole') as Json;
  t.same(role.rules, [
    { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
    { nonResourceURLs: ['/.well-known/openid-configuration', '/openid/v1/jwks'], verbs: ['get'] },
    { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] },
  ], 'RBAC only for what the agent reads, and its startup taint');
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

  // The watcher keeps what initialize set up, with exactly its capabilities and settings.
  t.same(pod.containers.map((c: Json) => c.name), ['agent', 'node-setup']);
  t.same(watcher.securityContext, init.securityContext, 'node-setup: the init container\'s security context, NET_ADMIN only');
  t.same(watcher.envFrom, init.envFrom);
  t.match(watcher.resources, { requests: { cpu: String, memory: String }, limits: { memory: String } });
  t.equal(watcher.ports, undefined, 'node-setup listens on nothing');

  const security = agent.securityContext;
  t.equal(security.runAsNonRoot, true, 'agent: non-root');
  t.ok(security.runAsUser > 0, 'agent: a non-root uid');
  t.equal(security.allowPrivilegeEscalation, false);
  t.equal(security.readOnlyRootFilesystem, true);
  t.same(security.capabilities.drop, ['ALL']);
  t.ok((security.capabilities.add ?? []).every((cap: string) => cap === 'NET_BIND_SERVICE'), 'agent: nothing beyond NET_BIND_SERVICE');
  t.equal(security.seccompProfile.type, 'RuntimeDefault');
  t.match(agent.resources, { requests: { cpu: String, memory: String }, limits: { memory: String } });

  // Cluster name, region and port come from the one ConfigMap, and the rendered args parse.
  for (const container of [init, agent]) t.same(container.envFrom[0], { configMapRef: { name: configMap.metadata.name } });
  t.match(env, { CLUSTER_NAME: String, AWS_REGION: String, AGENT_PORT: /^\d+$/ });
  const serverArgs = expand(agent.args, env);
  t.equal(serverArgs[0], 'server');
  // NODE_NAME as the downward API sets it.
  const server = parseServerArgs(serverArgs.slice(1), { ...env, NODE_NAME: 'node-a' }).config;
  t.ok(server, 'the agent\'s args are valid flags');
  t.match(server, { clusterName: FILLED.CLUSTER_NAME, region: FILLED.AWS_REGION }, 'the agent runs with the overlay\'s cluster name and region');
  t.same(agent.env, [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }], 'the node name from the downward API');
  t.match(agent.volumeMounts, [{ name: 'state', mountPath: server?.stateDir }], 'the state directory is the mounted host path');
  t.equal(security.runAsUser, 65532, 'the uid the state directory is handed to');
  const initialize = parseInitializeArgs(expand(init.args, env).slice(1)).config;
  t.equal(initialize?.redirectPort, undefined, 'the init container installs no redirect: nothing serves its port yet');
  t.equal(initialize?.watch, false, 'the init container sets up once and exits');
  const watching = parseInitializeArgs(expand(watcher.args, env).slice(1)).config;
  t.equal(watcher.args[0], 'initialize');
  t.equal(watching?.redirectPort, server?.port, 'node-setup redirects port 80 to the port the agent listens on (once it answers there)');
  t.same(watching, { ...initialize, watch: true, redirectPort: server?.port, handoverDir: watching?.handoverDir }, 'node-setup watches over the set-up initialize makes, plus the redirect');
  // The hand-over: node-setup's --handover-dir is the agent's, one emptyDir, and the agent's preStop waits for its decision.
  const handoverMount = (container: Json) => container.volumeMounts.find((m: Json) => m.mountPath === watching?.handoverDir) as Json | undefined;
  t.ok(handoverMount(watcher) !== undefined && handoverMount(watcher)?.name === handoverMount(agent)?.name, '--handover-dir is mounted in both containers, from one volume');
  t.ok(pod.volumes.find((v: Json) => v.name === handoverMount(agent)?.name)?.emptyDir, '... an emptyDir of this pod');
  const preStop = agent.lifecycle?.preStop?.exec?.command as string[] | undefined;
  t.equal(preStop?.[0], 'bash', 'the agent has a preStop hook (bash)');
  t.ok(preStop?.[2]?.includes(`d=${watching?.handoverDir};`) && preStop?.[2]?.includes('handed-over') && preStop?.[2]?.includes('/proc/1/fd/'), 'it reports its sockets and waits for node-setup\'s decision in --handover-dir');
  const preStopBoundS = Number(/i < (\d+)\b.*sleep 0\.1/.exec(preStop?.[2] ?? '')?.[1]) / 10;
  t.ok(preStopBoundS > 0 && preStopBoundS <= 10, `the wait is bounded (${preStopBoundS} s)`);
  // Each pod's probes reach its own agent: an exec probe reading the file this agent writes in this pod's emptyDir.
  const probeFile = server?.probeFile ?? '';
  const probeVolume = pod.volumes.find((v: Json) => v.name === agent.volumeMounts.find((m: Json) => probeFile.startsWith(`${m.mountPath}/`))?.name) as Json | undefined;
  t.ok(probeVolume?.emptyDir, `--probe-file (${probeFile}) is in an emptyDir of this pod`);
  for (const probe of ['livenessProbe', 'readinessProbe'] as const) {
    t.equal(agent[probe].httpGet, undefined, `${probe}: not on the shared probe port`);
    t.equal(agent[probe].exec.command[0], 'bash');
    t.ok(agent[probe].exec.command[2].includes(probeFile), `${probe} reads --probe-file`);
  }
  // net.ipv4.tcp_migrate_req through the host's /proc/sys/net, mounted where --proc-sys says.
  for (const container of [init, watcher]) {
    const procSys = parseInitializeArgs(expand(container.args, env).slice(1)).config?.procSys ?? '';
    const mount = container.volumeMounts?.find((m: Json) => m.mountPath === `${procSys}/net`) as Json | undefined;
    t.match(pod.volumes.find((v: Json) => v.name === mount?.name), { hostPath: { path: '/proc/sys/net', type: 'Directory' } }, `${container.name}: --proc-sys is the host's`);
  }
  t.equal(server?.podPort, 80, 'readiness checks the path pods use: port 80 of each bind host, through the redirect');
  t.ok(pod.terminationGracePeriodSeconds * 1000 > (server?.shutdownTimeoutMs ?? Infinity) + preStopBoundS * 1000, 'the preStop hook and the agent\'s shutdown deadline end inside the grace period');

  // The startup taint: on, tolerated (whatever effect the provisioner gives it), and narrowed by the policy.
  t.equal(server?.startupTaint, 'pod-identity-agent.dev/agent-not-ready', '--startup-taint with the documented key');
  for (const effect of ['NoSchedule', 'NoExecute']) t.ok(tolerates(pod.tolerations, { key: server?.startupTaint ?? '', value: 'true', effect }), `the agent tolerates its startup taint (${effect})`);
  if (admissionPolicy) checkAdmissionPolicy(t, objects, ds, server?.startupTaint);
  else t.notOk(objects.some((o) => o.apiVersion?.startsWith('admissionregistration.k8s.io/')), 'no admission policy');
  return { ds, init, agent, watcher, env };
}

t.test('the base does not render without the operator\'s settings, and says which', needsKubectl, async (t) => {
  for (const dir of ['base', '.']) {
    const error = await kustomizeError(join(DAEMONSET, dir));
    t.match(error, /nothing selected by ConfigMap\.\[noVer\]\.\[noGrp\]\/pod-identity-agent-settings\.\[noNs\]:data\.CLUSTER_NAME/, `kubectl kustomize daemonset/${dir === '.' ? '' : dir}: names the settings ConfigMap and its first key`);
  }
  // Each of the three left out of the overlay's settings: the render fails naming that key, so no
  // placeholder or default stands in for it.
  for (const key of Object.keys(FILLED)) {
    const error = await overlayError({ settings: { ...FILLED, [key]: undefined } });
    t.match(error, `fieldPath \`data.${key}\` is missing for replacement source ConfigMap.[noVer].[noGrp]/pod-identity-agent-settings`, `without ${key}: the error names it`);
  }
});

t.test('the example overlay renders from where it is, with its placeholders, which do not deploy silently', needsKubectl, async (t) => {
  const example = await readExample();
  const placeholders = settingsOf(example);
  t.same(Object.keys(placeholders).sort(), Object.keys(FILLED).sort(), 'the example sets exactly the three settings');
  t.equal(example.configMapGenerator[0].options.annotations['config.kubernetes.io/local-config'], 'true', 'the settings are local-config: read by the render, never applied');
  const objects = await kustomize(join(DAEMONSET, 'example'));
  const ds = objects.find((o) => o.kind === 'DaemonSet') as Json;
  const configMap = objects.find((o) => o.kind === 'ConfigMap') as Json;
  const pod = ds.spec.template.spec;
  t.notOk(objects.some((o) => o.metadata.name.startsWith('pod-identity-agent-settings')), 'the settings ConfigMap is not applied');
  t.match(configMap.data, { CLUSTER_NAME: placeholders.CLUSTER_NAME, AWS_REGION: placeholders.AWS_REGION });
  for (const container of [...pod.initContainers, ...pod.containers]) t.equal(container.image, placeholders.IMAGE, `${container.name}: the example's image`);
  // Deployed unchanged, each placeholder fails where the operator looks: the agent refuses to start
  // (one line, exit 1), and the kubelet refuses the image (InvalidImageName: a repository path is lowercase).
  const agent = pod.containers.find((c: Json) => c.name === 'agent') as Json;
  const problems = (() => {
    try {
      parseServerArgs(expand(agent.args, configMap.data).slice(1), { ...configMap.data, NODE_NAME: 'node-a' });
      return [];
    } catch (error) {
      return error instanceof ConfigError ? error.problems : [String(error)];
    }
  })();
  t.match(problems, [/--cluster-name "[^"]+" is the example overlay's placeholder/, /region "[^"]+" is not an AWS region name/], 'the agent does not start with the example\'s cluster name or region');
  const [repository = '', tag] = (placeholders.IMAGE ?? '').split(':');
  t.match(repository.split('/')[0], /^[A-Z][A-Z-]*$/, 'the image\'s first component is no registry host, and upper case: not a valid image reference');
  const { version } = JSON.parse(await readFile(`${ROOT}package.json`, 'utf8')) as { version: string };
  t.equal(tag, version, 'the example\'s tag is this version');
});

t.test('the operator\'s overlay: their settings where the containers read them', needsKubectl, async (t) => {
  const { ds, agent } = checkDaemonSet(t, await renderOverlay());
  const annotations = ds.spec.template.metadata.annotations;
  t.same(annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '2705', 'prometheus.io/path': '/metrics' });
  t.ok(agent.args.includes('--metrics-port=2705'), 'the annotated port is the metrics port');
  // A setting changed is a new ConfigMap name, so `kubectl apply` rolls the DaemonSet.
  const name = (objects: Json[]) => objects.find((o) => o.kind === 'ConfigMap')?.metadata.name as string;
  t.not(name(await renderOverlay({ settings: { ...FILLED, CLUSTER_NAME: 'prod-2' } })), name(await renderOverlay()), 'another cluster name, another ConfigMap hash');
});

t.test('the copy made as daemonset/README.md says (cp, then its sed) renders beside a clone', needsKubectl, async (t) => {
  const readme = await readFile(join(DAEMONSET, 'README.md'), 'utf8');
  const sed = /^sed -i 's\|(.+?)\|(.+?)\|' \.\.\/pod-identity-agent-my-cluster\/kustomization\.yaml$/m.exec(readme);
  if (sed === null) {
    t.fail('daemonset/README.md says how to point the copy at the clone');
    return;
  }
  t.ok((await readFile(`${ROOT}README.md`, 'utf8')).includes(sed[0]), 'README.md\'s Install gives the same command');
  const dir = await mkdtemp(join(tmpdir(), 'pia-copy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // The clone, as ../pod-identity-agent of the copy.
  await symlink(ROOT, join(dir, 'pod-identity-agent'));
  await mkdir(join(dir, 'pod-identity-agent-my-cluster'));
  const example = await readFile(join(DAEMONSET, 'example', 'kustomization.yaml'), 'utf8');
  const placeholders = settingsOf(parse(example) as Json);
  // sed without g: the first match on each line; then the operator fills in the three settings.
  let copy = example.split('\n').map((line) => line.replace(new RegExp(sed[1]!), sed[2]!)).join('\n');
  for (const [key, value] of Object.entries(FILLED)) copy = copy.replace(`${key}=${placeholders[key]}`, `${key}=${value}`);
  await writeFile(join(dir, 'pod-identity-agent-my-cluster', 'kustomization.yaml'), copy);
  checkDaemonSet(t, await kustomize(join(dir, 'pod-identity-agent-my-cluster')));
});

t.test('the affinity can be changed in the operator\'s overlay, as daemonset/README.md shows', needsKubectl, async (t) => {
  const readme = await readFile(join(DAEMONSET, 'README.md'), 'utf8');
  const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((match) => match[1]!).find((text) => text.includes('nodeSelectorTerms/0/matchExpressions/-'));
  if (block === undefined) {
    t.fail('daemonset/README.md shows a patch adding to the affinity');
    return;
  }
  const documented = parse(block) as Json;
  const pod = (objects: Json[]) => objects.find((o) => o.kind === 'DaemonSet')!.spec.template.spec as Json;
  const patched = pod(await renderOverlay({ extra: { patches: documented.patches } }));
  const added = patched.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions.at(-1) as Json;
  t.same(added.operator, 'DoesNotExist', 'the documented patch adds an expression');
  t.notOk(schedulable(patched.affinity, { ...NODES['EC2 node, amd64'], [added.key]: 'true' }), 'a node with the label is left out');
  t.ok(schedulable(patched.affinity, NODES['EC2 node, amd64']!), 'the others still run it');
  t.notOk(schedulable(patched.affinity, NODES.Fargate!), 'and Fargate is still excluded');
});

t.test('component: clusters without ValidatingAdmissionPolicy (below Kubernetes 1.30)', needsKubectl, async (t) => {
  const objects = await renderOverlay({ components: ['components/no-admission-policy'] });
  checkDaemonSet(t, objects, { admissionPolicy: false });
  const base = await renderOverlay();
  const kinds = (list: Json[]) => list.map((o) => `${o.kind}/${o.metadata.name}`).sort();
  t.same(kinds(objects), kinds(base).filter((kind) => !kind.startsWith('ValidatingAdmissionPolicy')), 'the base less the policy and its binding');
});

t.test('component: another agent port', needsKubectl, async (t) => {
  const { env } = checkDaemonSet(t, await renderOverlay({ components: ['components/agent-port'] }));
  t.equal(env.AGENT_PORT, '2710');
});

t.test('component: IPv4-only clusters', needsKubectl, async (t) => {
  const objects = await renderOverlay({ components: ['components/ipv4-only'] });
  const { init, agent, watcher, env } = checkDaemonSet(t, objects);
  t.ok(init.args.includes('--no-ipv6'));
  t.ok(watcher.args.includes('--no-ipv6'), 'node-setup does not put IPv6 back either');
  t.same(parseServerArgs(expand(agent.args, env).slice(1), { ...env, NODE_NAME: 'node-a' }).config?.bindHosts, ['169.254.170.23']);
});

t.test('component: metrics disabled', needsKubectl, async (t) => {
  const { ds, agent, env } = checkDaemonSet(t, await renderOverlay({ components: ['components/no-metrics'] }));
  t.equal(parseServerArgs(expand(agent.args, env).slice(1), { ...env, NODE_NAME: 'node-a' }).config?.metrics, false);
  t.equal(ds.spec.template.metadata.annotations, undefined, 'nothing for Prometheus to scrape');
  t.equal(agent.ports, undefined);
});

t.test('component: self-managed clusters (STS upstream, associations ConfigMap)', needsKubectl, async (t) => {
  const objects = await renderOverlay({ components: ['components/self-managed'] });
  const { ds, agent, env } = checkDaemonSet(t, objects);
  const server = parseServerArgs(expand(agent.args, env).slice(1), { ...env, NODE_NAME: 'node-a' }).config;
  t.equal(server?.upstream, 'sts');
  t.equal(server?.tokenVerification, 'jwks', 'verification explicit: never started without it');
  t.equal(server?.podBinding, 'on');
  const ref = server?.sts?.associations.configMap;
  t.same(ref, { namespace: ds.metadata.namespace, name: 'pod-identity-associations' }, 'the ConfigMap in the agent\'s namespace');
  t.notOk(objects.some((o) => o.kind === 'ConfigMap' && o.metadata.name === ref?.name), 'not rendered: re-applying the overlay must not reset the associations');
  const associations = parseAllDocuments(await readFile(`${ROOT}daemonset/components/self-managed/associations.example.yaml`, 'utf8'))[0]?.toJSON() as Json;
  t.match(associations.metadata, { name: ref?.name, namespace: ref?.namespace }, 'the example is the ConfigMap the agent watches');
  const { loadAssociationsParser, parseAssociations } = await import('../src/associations/association.ts');
  await loadAssociationsParser();
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

t.test('components compose: all of them at once, in the example\'s order', needsKubectl, async (t) => {
  const components = ['ipv4-only', 'agent-port', 'no-admission-policy', 'self-managed'].map((name) => `components/${name}`);
  const { init, agent, env } = checkDaemonSet(t, await renderOverlay({ components }), { admissionPolicy: false });
  const server = parseServerArgs(expand(agent.args, env).slice(1), { ...env, NODE_NAME: 'node-a' }).config;
  t.match(server, { port: 2710, upstream: 'sts', bindHosts: ['169.254.170.23'] });
  t.ok(init.args.includes('--no-ipv6'));
});

t.test('a component listed before ../base fails the render rather than change nothing', needsKubectl, async (t) => {
  for (const name of ['ipv4-only', 'agent-port', 'no-admission-policy', 'no-metrics', 'self-managed']) {
    const error = await overlayError({ before: [`components/${name}`] });
    t.match(error, `components/${name}`, `${name} first: the error names it`);
  }
});

t.test('the example lists every component, each with a line saying what for', async (t) => {
  const { readdir } = await import('node:fs/promises');
  const text = await readFile(join(DAEMONSET, 'example', 'kustomization.yaml'), 'utf8');
  for (const name of await readdir(join(DAEMONSET, 'components'))) {
    t.match(text, new RegExp(`^\\s*# - \\.\\./components/${name}\\s+# \\S`, 'm'), `${name}: listed, commented out, with what it is for`);
  }
});

t.test('the exec probes: bash builtins on the probe file\'s first line, stale after 30 s', needsKubectl, async (t) => {
  const { agent, env } = checkDaemonSet(t, await renderOverlay());
  const probeFile = parseServerArgs(expand(agent.args, env).slice(1), { ...env, NODE_NAME: 'node-a' }).config?.probeFile ?? '';
  const dir = await mkdtemp(join(tmpdir(), 'probe-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'probe');
  const now = Math.floor(Date.now() / 1000);
  const passes = async (probe: 'livenessProbe' | 'readinessProbe', line: string | undefined): Promise<boolean> => {
    if (line === undefined) await rm(file, { force: true });
    else await writeFile(file, `${line}\n{"ready":false}\n`);
    const [shell, flag, script] = agent[probe].exec.command as [string, string, string];
    return run(shell, [flag, script.replaceAll(probeFile, file)]).then(() => true, () => false);
  };
  t.same(await Promise.all([passes('livenessProbe', `1 1 ${now}`), passes('readinessProbe', `1 1 ${now}`)]), [true, true], 'live and ready');
  t.same([await passes('livenessProbe', `1 0 ${now}`), await passes('readinessProbe', `1 0 ${now}`)], [true, false], 'live, not ready');
  t.same([await passes('livenessProbe', `0 0 ${now}`), await passes('readinessProbe', `0 1 ${now}`)], [false, true], 'not live');
  t.same([await passes('livenessProbe', `1 1 ${now - 60}`), await passes('readinessProbe', `1 1 ${now - 60}`)], [false, false], 'stale: a hung agent');
  t.same([await passes('livenessProbe', undefined), await passes('readinessProbe', undefined)], [false, false], 'no file yet');
});

t.test('component alongside-addon: probe and metrics ports off the add-on\'s 2703 and 2705', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const { ds, agent, watcher, env } = checkDaemonSet(t, await renderOverlay({ components: ['components/alongside-addon'] }));
  const server = parseServerArgs(expand(agent.args, env).slice(1), { ...env, NODE_NAME: 'node-a' }).config;
  t.equal(server?.probePort, 2713);
  t.equal(server?.metricsPort, 2715);
  t.equal(ds.spec.template.metadata.annotations['prometheus.io/port'], '2715', 'the annotated port follows');
  t.equal(server?.port, 2704, 'the credentials port stays: the add-on binds port 80, not AGENT_PORT');
  t.ok(agent.lifecycle.preStop, 'the hand-over is there too');
  t.ok(parseInitializeArgs(expand(watcher.args, env).slice(1)).config?.handoverDir);
});

t.test('uninstall: a one-shot DaemonSet running initialize --remove on every node', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const objects = await kustomize(join(DAEMONSET, 'uninstall'));
  t.same(objects.map((o) => o.kind), ['DaemonSet'], 'a DaemonSet, nothing else');
  const ds = objects[0] as Json;
  const pod = ds.spec.template.spec;
  t.equal(ds.metadata.namespace, 'kube-system');
  t.equal(pod.hostNetwork, true, 'on the host network, where the set-up is');
  t.same(pod.tolerations, [{ operator: 'Exists' }], 'every node the agent ran on');
  const rendered = await renderOverlay();
  const base = rendered.find((o) => o.kind === 'DaemonSet') as Json;
  const agentPort = (rendered.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('pod-identity-agent')) as Json).data.AGENT_PORT as string;
  t.not(JSON.stringify(ds.spec.selector), JSON.stringify(base.spec.selector), 'its own selector: it never adopts the agent\'s pods');
  const [remove] = pod.initContainers as Json[];
  const config = parseInitializeArgs(remove!.args.slice(1)).config;
  t.equal(remove!.args[0], 'initialize');
  t.equal(config?.remove, true, 'initialize --remove');
  t.equal(String(config?.redirectPort), agentPort, 'the agent\'s port of the base (AGENT_PORT)');
  t.same(remove!.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] }, 'NET_ADMIN only');
  const mount = remove!.volumeMounts.find((m: Json) => m.mountPath === `${config?.procSys}/net`) as Json | undefined;
  t.match(pod.volumes.find((v: Json) => v.name === mount?.name), { hostPath: { path: '/proc/sys/net', type: 'Directory' } }, '--proc-sys is the host\'s');
  const [idle] = pod.containers as Json[];
  t.same(idle!.command, ['sleep', 'infinity'], 'then idle (coreutils sleep, in the image)');
  t.same(idle!.securityContext.capabilities, { drop: ['ALL'] });
  t.equal(idle!.image, remove!.image, 'one image');
  t.match(remove!.image, /^CHANGE-ME\//, 'a placeholder the kubelet refuses (InvalidImageName), never an image that might run: the operator sets theirs');
});

t.test('the uninstall overlay made as README.md says renders beside a clone, with the operator\'s image', needsKubectl, async (t) => {
  const readme = await readFile(`${ROOT}README.md`, 'utf8');
  const uninstall = readme.slice(readme.indexOf('## Uninstall'));
  const heredoc = /cat > \.\.\/pod-identity-agent-uninstall\/kustomization\.yaml <<'EOF'\n([\s\S]*?)\n\s*EOF\n/.exec(uninstall);
  if (heredoc === null) {
    t.fail('README.md\'s Uninstall writes the overlay');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'pia-uninstall-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await symlink(ROOT, join(dir, 'pod-identity-agent'));
  await mkdir(join(dir, 'pod-identity-agent-uninstall'));
  const text = heredoc[1]!.split('\n').map((line) => line.replace(/^ {3}/, '')).join('\n');
  await writeFile(join(dir, 'pod-identity-agent-uninstall', 'kustomization.yaml'), text);
  const objects = await kustomize(join(dir, 'pod-identity-agent-uninstall'));
  const pod = objects.find((o) => o.kind === 'DaemonSet')!.spec.template.spec as Json;
  const images = [...pod.initContainers, ...pod.containers].map((c: Json) => c.image as string);
  t.same([...new Set(images)], ['REGISTRY/pod-identity-agent:TAG'], 'every container runs the image the operator named');
});
