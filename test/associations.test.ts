import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AssociationsDocumentError, loadAssociationsParser, parseAssociations } from '../src/associations/association.ts';
import { AssociationTable } from '../src/associations/association-table.ts';
import { watchAssociations } from '../src/associations/watch.ts';
import { associationsMetrics } from '../src/observability/instrumentation.ts';
import { createMetrics } from '../src/observability/metrics.ts';
import { createLogger } from '../src/observability/logger.ts';
import { createLogAudit } from './helpers/log-audit.ts';
import { eventually } from './helpers/eventually.ts';

const ROLE = 'arn:aws:iam::111122223333:role/app';

t.before(loadAssociationsParser);

t.test('a full entry, in JSON and in YAML, parses to the same association', async (t) => {
  const entry = { namespace: 'default', serviceAccount: 'app', roleArn: ROLE, externalId: 'ext-123', sessionDuration: '2h', disableSessionTags: true, policy: '{"Version":"2012-10-17","Statement":[]}' };
  const json = parseAssociations(JSON.stringify({ associations: [entry] }), 'file a.json');
  const yaml = parseAssociations(
    `associations:
  - namespace: default
    serviceAccount: app
    roleArn: ${ROLE}
    externalId: ext-123
    sessionDuration: 2h
    disableSessionTags: true
    policy:
      Version: "2012-10-17"
      Statement: []
`,
    'file a.yaml',
  );
  t.same(json.problems, []);
  t.same(yaml.problems, []);
  const expected = { namespace: 'default', serviceAccount: 'app', roleArn: ROLE, externalId: 'ext-123', sessionDurationSeconds: 7200, disableSessionTags: true, policy: '{"Version":"2012-10-17","Statement":[]}' };
  t.match(json.associations, [{ ...expected, origin: 'file a.json entry 1' }]);
  t.match(yaml.associations, [{ ...expected, origin: 'file a.yaml entry 1' }], 'a policy written as YAML is sent as compact JSON');
  t.same(parseAssociations(JSON.stringify({ associations: [{ namespace: 'ns', serviceAccount: 'sa', roleArn: ROLE }] }), 'x').associations[0], {
    namespace: 'ns',
    serviceAccount: 'sa',
    roleArn: ROLE,
    externalId: undefined,
    sessionDurationSeconds: undefined,
    disableSessionTags: false,
    policy: undefined,
    origin: 'x entry 1',
  }, 'optional fields default like EKS: tags on, STS\'s own duration');
});

t.test('each invalid entry is refused with a message naming it; the others stay', async (t) => {
  const entries = [
    { namespace: 'default', serviceAccount: 'good', roleArn: ROLE },
    { namespace: 'default', serviceAccount: 'badrole', roleArn: 'arn:aws:iam::1111:user/x' },
    { namespace: 'Bad_NS', serviceAccount: 'app', roleArn: ROLE },
    { namespace: 'default', serviceAccount: 'short', roleArn: ROLE, sessionDuration: '5m' },
    { namespace: 'default', serviceAccount: 'long', roleArn: ROLE, sessionDuration: '13h' },
    { namespace: 'default', serviceAccount: 'notduration', roleArn: ROLE, sessionDuration: 3600 },
    { namespace: 'default', serviceAccount: 'badpolicy', roleArn: ROLE, policy: '{not json' },
    { namespace: 'default', serviceAccount: 'bigpolicy', roleArn: ROLE, policy: { Statement: 'x'.repeat(2100) } },
    { namespace: 'default', serviceAccount: 'typo', rolearn: ROLE },
    { namespace: 'default', serviceAccount: 'tags', roleArn: ROLE, disableSessionTags: 'yes' },
    { namespace: 'default', serviceAccount: 'ext', roleArn: ROLE, externalId: 'x' },
    'not an object',
    { serviceAccount: 'nonamespace', roleArn: ROLE },
  ];
  const parsed = parseAssociations(JSON.stringify({ associations: entries }), 'file f.json');
  t.same(parsed.associations.map((a) => a.serviceAccount), ['good']);
  t.same(parsed.problems, [
    'file f.json entry 2 (default/badrole): roleArn "arn:aws:iam::1111:user/x" is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)',
    'file f.json entry 3 (Bad_NS/app): namespace "Bad_NS" is not a Kubernetes namespace name',
    'file f.json entry 4 (default/short): sessionDuration "5m" must be whole seconds from 15m to 12h (and at most the role\'s maximum session duration; 1h when the agent runs on role credentials)',
    'file f.json entry 5 (default/long): sessionDuration "13h" must be whole seconds from 15m to 12h (and at most the role\'s maximum session duration; 1h when the agent runs on role credentials)',
    'file f.json entry 6 (default/notduration): sessionDuration 3600 is not a duration (like 1h or 90m)',
    'file f.json entry 7 (default/badpolicy): policy is not valid JSON',
    'file f.json entry 8 (default/bigpolicy): policy is 2116 characters; STS takes at most 2048',
    'file f.json entry 9 (default/typo): unknown field "rolearn"',
    'file f.json entry 10 (default/tags): disableSessionTags must be true or false, not "yes"',
    'file f.json entry 11 (default/ext): externalId must be 2-1224 characters of letters, digits and +=,.@:/-',
    'file f.json entry 12: not an object',
    'file f.json entry 13: namespace is required (a non-empty string)',
  ]);
});

t.test('a document that is not YAML, or has no associations list, is refused whole', async (t) => {
  t.throws(() => parseAssociations('associations: [unclosed', 'file x'), AssociationsDocumentError);
  t.throws(() => parseAssociations('{"associations": {}}', 'file x'), { message: 'file x: expected an object with an "associations" list' });
  t.throws(() => parseAssociations('- a\n- b\n', 'file x'), { message: /expected an object/ });
  t.same(parseAssociations('associations: []', 'file x'), { associations: [], problems: [] }, 'an empty list is valid: nothing is associated');
});

t.test('the table: first source and first entry win, later duplicates are reported, changes are named', async (t) => {
  const table = new AssociationTable(['file', 'configmap']);
  t.equal(table.complete, false);
  const doc = (source: string, ...entries: object[]) => parseAssociations(JSON.stringify({ associations: entries }), source);
  let update = table.update('file', doc('file', { namespace: 'a', serviceAccount: 'x', roleArn: ROLE }, { namespace: 'a', serviceAccount: 'x', roleArn: 'arn:aws:iam::111122223333:role/other' }));
  t.same([...update.changed], ['a/x']);
  t.same(table.summaries.get('file'), { inForce: 1, duplicates: ['file entry 2 (a/x): ignored, file entry 1 already associates this service account'] });
  t.equal(table.complete, false, 'the ConfigMap has not been read yet');
  update = table.update('configmap', doc('configmap', { namespace: 'a', serviceAccount: 'x', roleArn: 'arn:aws:iam::111122223333:role/cm' }, { namespace: 'b', serviceAccount: 'y', roleArn: ROLE }));
  t.equal(table.complete, true);
  t.same([...update.changed], ['b/y'], 'the file\'s a/x still stands');
  t.same(table.summaries.get('configmap'), { inForce: 1, duplicates: ['configmap entry 1 (a/x): ignored, file entry 1 already associates this service account'] }, 'a duplicate counts against the source it is written in');
  t.same(table.summaries.get('file')?.duplicates.length, 1);
  t.equal(table.find('a', 'x')?.roleArn, ROLE);
  update = table.update('file', { associations: [] });
  t.same([...update.changed], ['a/x'], 'the ConfigMap\'s a/x takes over once the file drops it');
  t.equal(table.find('a', 'x')?.roleArn, 'arn:aws:iam::111122223333:role/cm');
  update = table.update('configmap', doc('configmap-moved', { namespace: 'a', serviceAccount: 'x', roleArn: 'arn:aws:iam::111122223333:role/cm' }, { namespace: 'b', serviceAccount: 'y', roleArn: ROLE }));
  t.same([...update.changed], [], 'where an entry is written does not matter, only what it grants');
  t.equal(table.find('c', 'z'), undefined);
});

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pia-assoc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('the file is re-read when it changes; a broken version keeps the last good one', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'associations.yaml');
  await writeFile(path, `associations:\n  - {namespace: default, serviceAccount: app, roleArn: "${ROLE}"}\n  - {namespace: default, serviceAccount: bad, roleArn: nope}\n`);
  const audit = createLogAudit();
  const metrics = createMetrics({ defaultMetrics: false });
  const changes: string[][] = [];
  const watched = watchAssociations({ sources: { file: path, configMap: undefined }, logger: createLogger({ level: 'debug', destination: audit.sink }), observer: associationsMetrics(metrics), onChange: (changed) => changes.push([...changed]), fileIntervalMs: 20 });
  t.teardown(() => watched.close());
  t.equal(watched.complete, false, 'nothing is complete before the sources are read');
  await watched.start(undefined);
  t.equal(watched.complete, true);
  t.equal(watched.find('default', 'app')?.roleArn, ROLE);
  t.match(audit.lines.find((l) => l.msg === 'association refused'), { level: 'warn', problem: /entry 2 \(default\/bad\): roleArn "nope"/ });
  t.match(await metrics.registry.getSingleMetricAsString('pod_identity_associations'), /source="file",state="valid"} 1[\s\S]*source="file",state="refused"} 1/);

  // Replaced by rename, as editors and the kubelet do.
  await writeFile(join(dir, 'next'), `associations:\n  - {namespace: default, serviceAccount: app, roleArn: "arn:aws:iam::111122223333:role/v2"}\n`);
  await rename(join(dir, 'next'), path);
  await eventually(() => watched.find('default', 'app')?.roleArn === 'arn:aws:iam::111122223333:role/v2', 'the new role');
  t.same(changes.at(-1), ['default/app']);

  await writeFile(path, 'associations: [broken');
  await eventually(() => audit.lines.some((l) => l.msg === 'associations could not be read; the last good ones stay in force'), 'the parse error');
  t.equal(watched.find('default', 'app')?.roleArn, 'arn:aws:iam::111122223333:role/v2', 'the last good associations stay');
  await rm(path);
  await eventually(() => audit.lines.filter((l) => l.msg === 'associations could not be read; the last good ones stay in force').length === 2, 'the read error');
  t.equal(watched.find('default', 'app')?.roleArn, 'arn:aws:iam::111122223333:role/v2', 'a vanished file is not an empty one');
  await writeFile(path, 'associations: []');
  await eventually(() => watched.find('default', 'app') === undefined, 'the association removed');
  t.match(await metrics.registry.getSingleMetricAsString('pod_identity_association_reloads_total'), /result="applied"} 3[\s\S]*result="failed"} 2|result="failed"} 2[\s\S]*result="applied"} 3/);
  audit.assertClean();
});

t.test('a missing file or a broken document at start is a start-up error', async (t) => {
  const dir = await tempDir(t);
  const logger = createLogger({ level: 'fatal', destination: createLogAudit().sink });
  const options = { logger, onChange: () => undefined };
  await t.rejects(watchAssociations({ ...options, sources: { file: join(dir, 'missing.yaml'), configMap: undefined } }).start(undefined), { message: /cannot read the associations file .*missing\.yaml: ENOENT/ });
  await writeFile(join(dir, 'broken.yaml'), '{"associations": 3}');
  await t.rejects(watchAssociations({ ...options, sources: { file: join(dir, 'broken.yaml'), configMap: undefined } }).start(undefined), { message: /expected an object with an "associations" list/ });
  await t.rejects(watchAssociations({ ...options, sources: { file: undefined, configMap: { namespace: 'kube-system', name: 'x' } } }).start(undefined), { message: /needs the Kubernetes API/ });
});
