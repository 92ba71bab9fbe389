import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { renderOverlay } from './helpers/overlay.ts';

const run = promisify(execFile);
const available = async (command: string, args: string[]) =>
  run(command, args).then(
    () => true,
    () => false,
  );
const promtool = await available('promtool', ['--version']);
const kubectl = await available('kubectl', ['version', '--client']);
const ROOT = new URL('..', import.meta.url).pathname;
const RULES = `${ROOT}daemonset/alerts/pod-identity-agent.rules.yaml`;
const RULE_TESTS = `${ROOT}daemonset/alerts/pod-identity-agent.rules.test.yaml`;
const COMPONENT = `${ROOT}daemonset/components/prometheus-operator`;
const PROMETHEUS_RULE = `${COMPONENT}/prometheusrule.yaml`;

// Untyped YAML; the assertions are the schema.
type Json = Record<string, any>;
interface Rule { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }

const rules = parse(await readFile(RULES, 'utf8')) as { groups: { name: string; rules: Rule[] }[] };
const alerts = rules.groups.flatMap((group) => group.rules).filter((rule) => rule.alert !== undefined);

/** The PrometheusRule the component ships: the rule file's groups, and nothing else. */
function prometheusRule(): Json {
  return {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'pod-identity-agent', namespace: 'kube-system', labels: { 'app.kubernetes.io/name': 'pod-identity-agent' } },
    spec: { groups: rules.groups },
  };
}

if (process.env.PIA_WRITE_PROMETHEUSRULE === '1') {
  const header = '# Generated from daemonset/alerts/pod-identity-agent.rules.yaml: edit that file, then run\n# PIA_WRITE_PROMETHEUSRULE=1 tap --disable-coverage test/alerts.test.ts (the test fails while they differ).\n';
  await writeFile(PROMETHEUS_RULE, header + stringify(prometheusRule(), { lineWidth: 0 }));
}

t.test('every alert pages with a severity, a summary and a description naming the node', async (t) => {
  t.ok(alerts.length >= 13);
  for (const rule of alerts) {
    t.match(rule.labels?.severity, /^(critical|warning)$/, `${rule.alert}: severity`);
    t.match(rule.annotations?.summary, /\{\{ \$labels\.node \}\}/, `${rule.alert}: the summary names the node`);
    t.match(rule.annotations?.description, /\{\{ \$labels\.node \}\}/, `${rule.alert}: the description names the node`);
    // An aggregation that dropped `node` would page without saying where.
    const groupings = [...rule.expr.matchAll(/\bby\s*\(([^)]*)\)/g)].map((m) => m[1]!);
    t.ok(groupings.every((labels) => /\bnode\b/.test(labels)), `${rule.alert}: every by/on keeps the node label`);
  }
});

t.test('daemonset/README.md has a runbook entry for every alert', async (t) => {
  const readme = await readFile(`${ROOT}daemonset/README.md`, 'utf8');
  const runbook = readme.slice(readme.indexOf('\n## Runbook\n'));
  for (const rule of alerts) t.match(runbook, new RegExp(`^### \`${rule.alert}\``, 'm'), `${rule.alert} has a runbook section`);
});

t.test('promtool: the rules check, and every alert has a case that fires it and one that stays silent', { skip: promtool ? false : 'promtool is not installed (Debian package prometheus)' }, async (t) => {
  const check = await run('promtool', ['check', 'rules', RULES]);
  t.match(check.stdout, `SUCCESS: ${alerts.length} rules found`);

  const tests = parse(await readFile(RULE_TESTS, 'utf8')) as { rule_files: string[]; tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[] };
  t.same(tests.rule_files, ['pod-identity-agent.rules.yaml'], 'the tests load the rule file');
  const cases = tests.tests.flatMap((group) => group.alert_rule_test ?? []);
  for (const { alert } of alerts) {
    const mine = cases.filter((c) => c.alertname === alert);
    t.ok(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${alert}: a case fires it`);
    t.ok(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${alert}: a case keeps it silent`);
  }
  t.same(cases.map((c) => c.alertname).filter((name) => !alerts.some((rule) => rule.alert === name)), [], 'no case for an alert that does not exist');

  // promtool exits non-zero on any failing case; the output says which.
  const result = await run('promtool', ['test', 'rules', RULE_TESTS]).then(
    ({ stdout, stderr }) => ({ ok: true, output: `${stdout}${stderr}` }),
    (error: { stdout?: string; stderr?: string }) => ({ ok: false, output: `${error.stdout ?? ''}${error.stderr ?? ''}` }),
  );
  t.ok(result.ok, 'promtool test rules passes', { output: result.output });
  t.match(result.output, /SUCCESS/);
  t.notMatch(result.output, /FAILED/);
});

t.test('the dashboard shows what each alert watches', async (t) => {
  const dashboard = JSON.parse(await readFile(`${ROOT}daemonset/grafana-dashboard.json`, 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
  const seriesOf = (expr: string) => new Set(expr.match(/\b(?:pod_identity_[a-z0-9_]+|nodejs_[a-z0-9_]+|up)\b(?=\s*[{[)\s]|$)/g) ?? []);
  for (const rule of alerts) {
    // pod_identity_build_info only picks the agent's targets out of every Node.js program's.
    const wanted = [...seriesOf(rule.expr)].filter((name) => name !== 'pod_identity_build_info');
    t.ok(wanted.length > 0, `${rule.alert} queries the agent's series`);
    const panel = dashboard.panels.find((p) => {
      const shown = new Set((p.targets ?? []).flatMap((target) => [...seriesOf(target.expr)]));
      return wanted.every((name) => shown.has(name));
    });
    t.ok(panel, `${rule.alert}: a panel shows ${wanted.join(', ')}`);
  }
});

t.test('the PrometheusRule is the rule file', async (t) => {
  const shipped = parse(await readFile(PROMETHEUS_RULE, 'utf8')) as Json;
  t.same(shipped, prometheusRule(), 'equal to the rule file\'s groups (PIA_WRITE_PROMETHEUSRULE=1 rewrites it)');
});

t.test('the Operator component renders with the operator\'s overlay and beside every other component', { skip: kubectl ? false : 'kubectl is not installed' }, async (t) => {
  const { readdir } = await import('node:fs/promises');
  const others = (await readdir(`${ROOT}daemonset/components`)).filter((name) => name !== 'no-metrics' && name !== 'prometheus-operator');
  const overlays = [[], ...others.map((name) => [`components/${name}`])];
  t.ok(overlays.length >= 5);
  for (const components of overlays) {
    const overlay = ['the example', ...components].join(' + ');
    const objects = await renderOverlay({ components: [...components, 'components/prometheus-operator'] });
    const ds = objects.find((o) => o.kind === 'DaemonSet');
    const monitor = objects.find((o) => o.kind === 'PodMonitor');
    const rule = objects.find((o) => o.kind === 'PrometheusRule');
    t.ok(ds, `${overlay}: the DaemonSet`);
    t.same(rule?.spec, { groups: rules.groups }, `${overlay}: the PrometheusRule, with the rule file's groups`);
    if (ds === undefined || monitor === undefined) {
      t.fail(`${overlay}: the PodMonitor`);
      continue;
    }
    t.equal(monitor.metadata.namespace, ds.metadata.namespace, `${overlay}: the PodMonitor is in the agent's namespace`);
    const podLabels = ds.spec.template.metadata.labels as Record<string, string>;
    t.ok(Object.entries(monitor.spec.selector.matchLabels as Record<string, string>).every(([k, v]) => podLabels[k] === v), `${overlay}: it selects the agent's pods`);
    t.equal(podLabels[monitor.spec.jobLabel], 'pod-identity-agent', `${overlay}: job="pod-identity-agent", as the alerts select up by`);
    const agent = ds.spec.template.spec.containers.find((c: Json) => c.name === 'agent') as Json;
    const metricsPort = (agent.args as string[]).find((arg) => arg.startsWith('--metrics-port='))?.split('=')[1];
    const [endpoint] = monitor.spec.podMetricsEndpoints as Json[];
    // No named or numbered container port: the pods will declare none.
    t.notOk('port' in endpoint! || 'portNumber' in endpoint! || 'targetPort' in endpoint!, `${overlay}: the endpoint relies on no declared container port`);
    const relabelings = endpoint!.relabelings as Json[];
    t.ok(relabelings.some((r) => r.action === 'keep' && r.regex === `${agent.name};false`), `${overlay}: the agent container's target only`);
    t.same(relabelings.filter((r) => r.targetLabel === '__address__').map((r) => r.replacement), [`$1:${metricsPort}`, `[$1]:${metricsPort}`], `${overlay}: the agent's --metrics-port`);
    t.ok(relabelings.some((r) => r.sourceLabels?.[0] === '__meta_kubernetes_pod_node_name' && r.targetLabel === 'node'), `${overlay}: the node label`);
  }
});
