// Issue #18: `initialize --remove` takes off exactly what `initialize` put on the node, so that a
// server binding 169.254.170.23:80 itself (the EKS add-on) answers pods at once; the redirect is
// never installed while nothing serves its port; the watcher's hand-over on SIGTERM when this pod's
// agent is not running. In network namespaces, as root; waits on log lines and state, never on time.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { startWatcher } from './helpers/agent-pod.ts';
import { BASE_ENV, CLI } from './helpers/cli-process.ts';
import { eventually } from './helpers/eventually.ts';
import { canMakeNamespaces, inNamespace, makeNodeAndPod, startHttpServer, startProber } from './helpers/netns.ts';

const PORT = 2704;
const AGENT = 'the agent';
const ADDON = 'the add-on';
const ENDPOINTS = ['http://169.254.170.23/v1/credentials', 'http://[fd00:ec2::23]/v1/credentials'];

async function unavailable(): Promise<string | undefined> {
  const namespaces = await canMakeNamespaces();
  if (namespaces !== undefined) return namespaces;
  return promisify(execFile)('nft', ['--version']).then(
    () => undefined,
    () => 'nft is not installed (apt-get install nftables)',
  );
}
const skip = (await unavailable()) ?? false;

/** A node and a pod; `cli(...)` runs the CLI in the node's namespace and returns its stdout. */
async function makeNode(t: Test, suffix: string) {
  const { node, pod } = await makeNodeAndPod(suffix, (cleanup) => t.teardown(cleanup));
  const sh = async (command: string, ...args: string[]) => (await inNamespace(node, command, args)).stdout;
  const cli = async (...args: string[]) => (await inNamespace(node, process.execPath, [CLI, 'initialize', '--proc-sys=/proc/sys', ...args], BASE_ENV)).stdout;
  return {
    node,
    pod,
    cli,
    sh,
    // Per network namespace: read from inside the node's.
    migrateReq: async () => (await sh('cat', '/proc/sys/net/ipv4/tcp_migrate_req')).trim(),
    hasTable: async () => (await sh('nft', 'list', 'tables')).includes('inet pod_identity_agent'),
    /** A redirect rule in the node's ruleset (the hand-over leaves the table's chains, with only a rule that keeps connection tracking on). */
    redirects: async () => / dnat /.test(await sh('nft', 'list', 'ruleset')),
    link: () => sh('ip', '-details', 'link', 'show', 'dev', 'pod-id-link0').then((out) => out, () => undefined),
  };
}

t.test('initialize --remove: alone, beside the add-on, and twice', { skip, timeout: 120_000 }, async (t) => {
  const n = await makeNode(t, `r${process.pid % 100_000}`);
  const fromPod = await startProber(t, n.pod);
  t.equal(await n.migrateReq(), '0', 'a fresh namespace: tcp_migrate_req 0');

  // (a) Alone: the set-up as the DaemonSet makes it (init, then the redirect once the agent answers), then removed.
  t.match(await n.cli(), /created (dummy|veth) link pod-id-link0/);
  t.match(await n.link(), /alias pod-identity-agent created-link tcp_migrate_req=0/, 'the link is marked as this agent\'s, with the sysctl\'s prior value');
  const agent = await startHttpServer(t, n.node, AGENT, PORT, ['169.254.170.23', 'fd00:ec2::23']);
  t.match(await n.cli(`--redirect-port=${PORT}`), /redirect TCP port 80/);
  t.same(await Promise.all(ENDPOINTS.map((url) => fromPod.ask(url))), [AGENT, AGENT], 'set up: the pod reaches the agent');
  // The agent still listening on its own port (draining) does not keep the link.
  const removed = await n.cli('--remove', `--redirect-port=${PORT}`);
  t.match(removed, /removed the redirect of port 80/);
  t.match(removed, /restored net\.ipv4\.tcp_migrate_req = 0/);
  t.match(removed, /deleted pod-id-link0 with its addresses and routes/);
  t.equal(await n.link(), undefined, 'no link (nor its veth peer, addresses or routes)');
  t.notOk(await n.sh('ip', 'link', 'show').then((out) => out.includes('pod-id-link0')), 'nothing named pod-id-link0 at all');
  t.equal(await n.hasTable(), false, 'no table');
  t.equal(await n.migrateReq(), '0', 'the sysctl as it was');
  agent.child.kill('SIGTERM');
  await agent.exited;

  // (c) Idempotent.
  const again = await n.cli('--remove');
  t.match(again, /nothing of this agent left on the node: nothing changed/);
  t.notMatch(again, /removed|deleted|restored|kept/);

  // (b) Beside the add-on: our set-up, then the add-on binding port 80 of the addresses itself.
  await n.cli();
  await startHttpServer(t, n.node, AGENT, PORT, ['169.254.170.23', 'fd00:ec2::23']);
  await n.cli(`--redirect-port=${PORT}`);
  await startHttpServer(t, n.node, ADDON, 80, ['169.254.170.23', 'fd00:ec2::23']);
  t.same(await Promise.all(ENDPOINTS.map((url) => fromPod.ask(url))), [AGENT, AGENT], 'with the redirect, the agent answers, not the add-on');
  const beside = await n.cli('--remove', `--redirect-port=${PORT}`);
  t.match(beside, /removed the redirect of port 80/);
  t.match(beside, /kept pod-id-link0: another program listens on 169\.254\.170\.23:80, \[fd00:ec2::23\]:80/, 'one line says why the link stays');
  t.match(beside, /restored net\.ipv4\.tcp_migrate_req = 0/);
  t.same(await Promise.all(ENDPOINTS.map((url) => fromPod.ask(url))), [ADDON, ADDON], 'the pod reaches the add-on at once, at both addresses');
  t.equal(await n.hasTable(), false);
  t.notMatch(await n.link(), /alias/, 'the link is left to the add-on, unmarked');
  const twice = await n.cli('--remove', `--redirect-port=${PORT}`);
  t.match(twice, /left pod-id-link0: this agent did not create it/);
  t.match(twice, /nothing changed/);
  t.same(await Promise.all(ENDPOINTS.map((url) => fromPod.ask(url))), [ADDON, ADDON]);
});

t.test('initialize on the add-on\'s link: the link stays the add-on\'s; --remove restores the sysctl only', { skip, timeout: 60_000 }, async (t) => {
  const n = await makeNode(t, `l${process.pid % 100_000}`);
  // The add-on's init container made the link (no mark of ours).
  await n.sh('ip', 'link', 'add', 'pod-id-link0', 'type', 'veth', 'peer', 'name', 'pod-id-link0-p');
  await n.sh('ip', 'addr', 'add', '169.254.170.23/32', 'dev', 'pod-id-link0');
  const init = await n.cli();
  t.notMatch(init, /created/, 'no link created');
  t.match(await n.link(), /alias pod-identity-agent tcp_migrate_req=0/, 'only the sysctl\'s prior value is noted on it');
  const removed = await n.cli('--remove');
  t.match(removed, /restored net\.ipv4\.tcp_migrate_req = 0/);
  t.match(removed, /removed this agent's note from pod-id-link0's alias; the link is not this agent's and stays/);
  t.ok(await n.link(), 'the add-on\'s link stays, although nothing listens on it');
  t.notMatch(await n.link(), /alias/);
  t.match(await n.cli('--remove'), /nothing changed/);
});

t.test('the redirect waits for its port to answer; the hand-over when this pod\'s agent is not running', { skip, timeout: 90_000 }, async (t) => {
  const n = await makeNode(t, `w${process.pid % 100_000}`);
  const fromPod = await startProber(t, n.pod);
  const dir = await mkdtemp(join(tmpdir(), 'pia-handover-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.notMatch(await n.cli(), /redirect/, 'the init container\'s step: no redirect');

  const watcher = await startWatcher(t, n.node, dir, PORT);
  await eventually(() => watcher.output().includes('the redirect waits for the agent'), 'the watcher waiting for the agent');
  t.equal(await n.redirects(), false, 'no redirect while nothing serves the port');
  t.match(await fromPod.ask(ENDPOINTS[0]!), /^no answer: ECONNREFUSED$/, 'port 80 is refused at once, not redirected to nowhere');
  const agent = await startHttpServer(t, n.node, AGENT, PORT, ['169.254.170.23', 'fd00:ec2::23']);
  await eventually(() => watcher.output().includes('redirected port 80 to it'), 'the redirect once the agent answers');
  t.equal(await n.redirects(), true, 'the redirect appears');
  t.same(await Promise.all(ENDPOINTS.map((url) => fromPod.ask(url))), [AGENT, AGENT]);

  // This pod's agent did not run its preStop (not running): every listener is another's, and one
  // listens (the server above, standing in for a surge sibling): the redirect stays.
  watcher.child.kill('SIGTERM');
  t.equal(await watcher.exited, 0);
  t.equal((await readFile(join(dir, 'handed-over'), 'utf8')).trim(), 'kept');
  t.match(watcher.output(), /did not report its sockets/);
  t.match(watcher.output(), /another agent listens on port 2704: the redirect stays for it/);
  t.equal(await n.redirects(), true);

  // Nothing listens: the redirect goes, the link stays (a refusal at port 80, not a timeout).
  agent.child.kill('SIGTERM');
  await agent.exited;
  const last = await startWatcher(t, n.node, dir, PORT);
  t.equal(await readFile(join(dir, 'handed-over'), 'utf8').catch(() => 'none'), 'none', 'a new watcher clears the last decision');
  last.child.kill('SIGTERM');
  t.equal(await last.exited, 0);
  t.equal((await readFile(join(dir, 'handed-over'), 'utf8')).trim(), 'removed');
  t.equal(await n.redirects(), false, 'the redirect is gone');
  t.equal(await n.hasTable(), true, 'its table stays, without the redirect, keeping the translation of connections already redirected');
  t.ok(await n.link(), 'the link stays');
  t.match(await fromPod.ask(ENDPOINTS[0]!), /^no answer: ECONNREFUSED$/);
  t.match(await n.cli('--remove'), /removed the redirect of port 80/, '--remove deletes the table');
  t.equal(await n.hasTable(), false);
});
