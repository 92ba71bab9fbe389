import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fromHttp } from '@aws-sdk/credential-providers';
import t, { type Test } from 'tap';
import { PATIENT_RETRY, startHarness } from './helpers/harness.ts';

const run = promisify(execFile);

async function tokenDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pia-sdk-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('AWS SDK for JavaScript fromHttp, through the pod environment variables, re-reading a rotated token file', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const file = join(await tokenDir(t), 'eks-pod-identity-token');
  await writeFile(file, await h.token({ namespace: 'default', serviceAccount: 'app', podName: 'app-1' }));
  process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = h.credentialsUrl;
  process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = file;
  t.teardown(() => {
    delete process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI;
    delete process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE;
  });
  const provider = fromHttp();

  const first = await provider();
  t.match(first, { accessKeyId: /^ASIA/ });
  t.ok(first.expiration instanceof Date && first.expiration.getTime() > Date.now() + 3600_000, 'expiration parsed as a future date');
  t.match(h.emulator.calls.at(-1), { serviceAccount: 'app' });

  // The kubelet rewrites the file with a new token; here it also names another identity.
  await writeFile(file, await h.token({ namespace: 'team-b', serviceAccount: 'worker', podName: 'worker-1' }));
  const second = await provider();
  t.not(second.accessKeyId, first.accessKeyId, 'the new token gave other credentials');
  t.match(h.emulator.calls.at(-1), { namespace: 'team-b', serviceAccount: 'worker' });
  t.equal(h.emulator.callCount, 2);

  const third = await provider();
  t.equal(third.accessKeyId, second.accessKeyId, 'the same token is answered from the cache');
  t.equal(h.emulator.callCount, 2);
});

t.test('AWS SDK for JavaScript sees the agent\'s Code on a 4xx', async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const file = join(await tokenDir(t), 'token');
  await writeFile(file, await h.token({ serviceAccount: 'no-association' }));
  const provider = fromHttp({ awsContainerCredentialsFullUri: h.credentialsUrl, awsContainerAuthorizationTokenFile: file });
  const error: unknown = await provider().then(() => undefined, (caught: unknown) => caught);
  t.match(error, { Code: 'ResourceNotFoundException' });
  t.equal(h.emulator.callCount, 1, 'the SDK tried four times; the negative cache answered the three retries');
});

const botocore = await run('python3', ['-c', 'import botocore; print(botocore.__version__)']).then(
  ({ stdout }) => stdout.trim(),
  () => undefined,
);

t.test(`botocore ${botocore ?? ''} (Python) reads credentials from the agent`, { skip: botocore === undefined ? 'python3 with botocore is not installed' : false }, async (t) => {
  const h = await startHarness(t, { retry: PATIENT_RETRY });
  const token = await h.token();
  const file = join(await tokenDir(t), 'token');
  await writeFile(file, token);
  // Old botocore (Debian's 1.29) reads only AWS_CONTAINER_AUTHORIZATION_TOKEN; newer reads the file too.
  const env = { PATH: process.env.PATH ?? '', HOME: '/nonexistent', AWS_CONTAINER_CREDENTIALS_FULL_URI: h.credentialsUrl, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: file, AWS_CONTAINER_AUTHORIZATION_TOKEN: token, AWS_EC2_METADATA_DISABLED: 'true' };
  const script = [
    'import json, botocore.session',
    'c = botocore.session.get_session().get_credentials()',
    'f = c.get_frozen_credentials()',
    'print(json.dumps({"method": c.method, "access_key": f.access_key, "has_secret": bool(f.secret_key), "has_token": bool(f.token)}))',
  ].join('\n');
  const { stdout } = await run('python3', ['-c', script], { env });
  t.same(JSON.parse(stdout), { method: 'container-role', access_key: JSON.parse(stdout).access_key, has_secret: true, has_token: true });
  t.match(JSON.parse(stdout).access_key, /^ASIA/);
  t.equal(h.emulator.callCount, 1);
});
