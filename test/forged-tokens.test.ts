// --upstream sts: the agent's signature check is all that stands between a pod and any associated
// role (STS trusts the node's credentials, not the pod's token), so forgeries under the cluster's
// own kid are tried here, not only tokens from an unknown issuer.
import t from 'tap';
import type { ProjectedTokenClaims } from './emulator/token-issuer.ts';
import { expectSignatureRefused, forgeriesUnderKid } from './helpers/forgeries.ts';
import { APP_ROLE, startStsCluster } from './helpers/sts-cluster.ts';

const ADMIN_ROLE = 'arn:aws:iam::111122223333:role/admin';

t.test('a bad signature under the cluster\'s kid gets no role: altered after signing, or signed by another key', async (t) => {
  const c = await startStsCluster(t, {
    associations: [
      { namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE },
      { namespace: 'default', serviceAccount: 'admin', roleArn: ADMIN_ROLE },
    ],
    roles: { [APP_ROLE]: {}, [ADMIN_ROLE]: {} },
  });
  const web = c.addPod('web');
  const adminPod = c.addPod('console', 'admin');
  const genuine = await c.token(web);
  t.equal((await c.request(web)).status, 200, 'the holder\'s own token works');
  const calls = c.sts.callCount;

  // Claims that would pass every other check: the admin pod's, with a matching sub.
  const asAdmin = (claims: ProjectedTokenClaims): ProjectedTokenClaims => ({
    ...claims,
    sub: 'system:serviceaccount:default:admin',
    'kubernetes.io': { ...claims['kubernetes.io'], serviceaccount: { ...claims['kubernetes.io'].serviceaccount, name: 'admin' }, pod: { name: adminPod.name, uid: adminPod.uid } },
  });
  const cases = await forgeriesUnderKid(genuine, c.issuer.kid, {
    name: 'the admin pod',
    claims: asAdmin,
    subject: { namespace: 'default', serviceAccount: 'admin', podName: adminPod.name, podUid: adminPod.uid },
  });
  await expectSignatureRefused(t, genuine, cases, c);
  t.equal(c.sts.callCount, calls, 'no AssumeRole for any of them');

  // The refusals were the signature's: the admin pod's own token gets the admin role.
  const admin = await c.request(adminPod);
  t.equal(admin.status, 200);
  t.same(c.sts.calls.map((call) => call.roleArn), [APP_ROLE, ADMIN_ROLE], 'the admin role only for the admin pod\'s own token');
});
