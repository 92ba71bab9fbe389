import { connect } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { CommandError, run } from './command.ts';

export interface RedirectTarget {
  readonly family: 'ip' | 'ip6';
  readonly address: string;
}

export const TABLE = 'pod_identity_agent';

/**
 * The kernel runs all nat chains of a hook inside one NAT step (at -100), in order of their
 * priorities, and the first chain whose rule DNATs a new connection ends NAT for that connection:
 * later nat chains never see its first packet (measured: the iptables nat table's counters stay at
 * zero for redirected connections). At equal priorities the chain registered last runs first, and a
 * full iptables-restore re-creates the nat table: at the usual dstnat (-100) the redirect lost to
 * portmap's hostPort rules. -130 comes before the iptables nat table (either backend), kube-proxy and
 * portmap at -100, firewalld at -90, and tools that nudge themselves to dstnat - 10; the kernel
 * refuses nat chains at -200 and below, and nft names priorities within 10 of a standard one (-140
 * would list as "mangle + 10"). The rules match only the agent's addresses, so coming first takes
 * nothing from anyone else.
 */
export const NAT_PRIORITY = -130;

const CHAINS = [
  { name: 'prerouting', hook: 'prerouting' },
  { name: 'output', hook: 'output' },
] as const;

/**
 * Pods reach the agent at port 80, but a non-root container cannot bind it: Kubernetes puts an
 * added NET_BIND_SERVICE in the bounding set only, and with allowPrivilegeEscalation false no file
 * capability can raise it (kubernetes/kubernetes#56374). So `initialize`, which holds NET_ADMIN,
 * rewrites TCP to <address>:80 into <address>:<port> (DNAT, before routing for pods and on output
 * for host-network pods), and the agent listens unprivileged on <port>. One nftables table of its
 * own, replaced atomically, and only when what the kernel lists differs from what it should hold:
 * an unchanged run changes nothing. Returns whether anything changed.
 */
export async function ensureRedirect(targets: readonly RedirectTarget[], port: number): Promise<boolean> {
  if (holds(await listTable(), targets, port)) return false;
  await run('nft', ['-f', '-'], tableScript(targets, port));
  // Read back, so that a kernel or nft that stores something else is an error here rather than a
  // replacement on every later check.
  if (!holds(await listTable(), targets, port)) throw new Error(`nft lists table inet ${TABLE} differently than it was written`);
  return true;
}

/** Whether the table holds the redirect of these targets to this port, exactly. */
export async function redirectInPlace(targets: readonly RedirectTarget[], port: number): Promise<boolean> {
  return holds(await listTable(), targets, port);
}

/**
 * The one rule of a handed-over table, in each chain. The kernel tracks connections in a network
 * namespace only while some rule needs it, and a connection already redirected is translated (to the
 * agent's port, and its answers back to port 80) from its conntrack entry. Where the dnat rules were
 * the only users (nothing else on the node uses conntrack; kube-proxy's and the CNIs' NAT rules do),
 * removing them turned tracking off, and the next packets of connections already sent to the agent
 * went to port 80 untranslated: reset by the add-on's listener, or answered by one of its TIME_WAIT
 * sockets and left hanging (captured at the hand-over, daemonset/lifecycle.md). A conntrack match keeps
 * tracking on; it sees only a connection's first packet (a nat chain's), and changes nothing.
 */
const KEEP_TRACKING_RULE = 'ct state new counter comment "keeps connection tracking on: connections already redirected keep their translation"';

/**
 * The hand-over: the table keeps its two chains with KEEP_TRACKING_RULE and no redirect, so that new
 * connections to port 80 go wherever they would without this agent (the add-on binding it itself)
 * while those already sent to the agent keep their translation until they end. The nat chains keep
 * the kernel's NAT step, the rule keeps connection tracking: deleting the table, or only its rules,
 * could end either where nothing else needs them. `initialize --remove` deletes the table later.
 * Returns whether a redirect was there.
 */
export async function releaseRedirect(): Promise<boolean> {
  const objects = await listTable();
  if (objects === undefined) return false;
  const redirected = objects.some((o) => o.rule?.expr.some((e) => isDnat(e)) === true);
  // Rewritten also when a version without the rule emptied it.
  if (redirected || !handedOver(objects)) await run('nft', ['-f', '-'], tableScript([], 0));
  return redirected;
}

/** Deletes the table (the redirect and nothing else); false when there was none. */
export async function removeRedirect(): Promise<boolean> {
  try {
    await run('nft', ['delete', 'table', 'inet', TABLE]);
    return true;
  } catch (error) {
    if (error instanceof CommandError && /no such file or directory/i.test(error.stderr)) return false;
    throw error;
  }
}

/**
 * Whether something accepts TCP connections on host:port: the redirect may only point at a port
 * that is served (a pod sent to an unserved port fails, while whatever binds port 80 directly, such
 * as the EKS add-on, would have answered it). A connect and a close, without a request: the agent
 * neither logs nor counts it.
 */
export function portAnswers(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: timeoutMs });
    const done = (answered: boolean) => {
      socket.destroy();
      resolve(answered);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

/** The table as nft input. Its comment is for people (`nft list table`); the check reads the rules. */
export function tableScript(targets: readonly RedirectTarget[], port: number): string {
  // Connection-opening segments only (SYN without ACK; ECN's flags allowed): where connection tracking
  // starts only with this table (nothing else on the node uses it), the kernel picks up connections
  // already open to whatever binds port 80 (the add-on) as new ones mid-stream, and a redirect of those
  // would reset them (seen in the namespace tests).
  const redirects = targets.map(({ family, address }) => {
    const to = family === 'ip6' ? `[${address}]:${port}` : `${address}:${port}`;
    return `    ${family} daddr ${address} tcp dport 80 tcp flags & (syn | ack) == syn dnat ${family} to ${to}\n`;
  });
  const rules = targets.length === 0 ? [`    ${KEEP_TRACKING_RULE}\n`] : redirects;
  const comment =
    targets.length === 0
      ? // nft keeps at most 128 bytes of a comment.
        'pod-identity-agent v3: handed over, no redirect; initialize --remove deletes this table'
      : `pod-identity-agent v3: TCP port 80 of ${targets.map((t) => t.address).join(' ')} to ${port}, nat priority ${NAT_PRIORITY}`;
  const chains = CHAINS.map(
    ({ name, hook }) => `  chain ${name} {\n    type nat hook ${hook} priority ${NAT_PRIORITY}; policy accept;\n${rules.join('')}  }\n`,
  );
  // Declaring the table first makes the delete valid when it does not exist yet: one atomic swap.
  return `table inet ${TABLE}\ndelete table inet ${TABLE}\ntable inet ${TABLE} {\n  comment "${comment}"\n${chains.join('')}}\n`;
}

interface NftChain {
  readonly name: string;
  readonly type?: string;
  readonly hook?: string;
  readonly prio?: number;
  readonly policy?: string;
}

interface NftRule {
  readonly chain: string;
  readonly expr: readonly unknown[];
}

type NftObject = { readonly chain?: NftChain; readonly rule?: NftRule };

/** The table's chains and rules from `nft -j` (a stable interface, unlike the text listing); undefined when absent. */
async function listTable(): Promise<NftObject[] | undefined> {
  try {
    return (JSON.parse(await run('nft', ['-j', 'list', 'table', 'inet', TABLE])) as { nftables: NftObject[] }).nftables;
  } catch (error) {
    if (error instanceof CommandError && /no such file or directory/i.test(error.stderr)) return undefined;
    throw error;
  }
}

/**
 * Whether the listed table holds exactly our chains (nat, hook, priority, policy accept), each with
 * one redirect per target in order. A table from an older version (priority -100) does not.
 */
function holds(objects: readonly NftObject[] | undefined, targets: readonly RedirectTarget[], port: number): boolean {
  return eachChain(objects, (rules) => rules.length === targets.length && targets.every((target, i) => redirects(rules[i]!.expr, target, port)));
}

/** Whether the listed table is the hand-over's: our chains, each with KEEP_TRACKING_RULE alone. */
function handedOver(objects: readonly NftObject[]): boolean {
  const keeps = { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'new' } };
  return eachChain(objects, (rules) => rules.length === 1 && rules[0]!.expr.some((e) => isDeepStrictEqual(e, keeps)));
}

/** Whether the table holds exactly our chains (nat, hook, priority, policy accept), and each chain's rules pass `check`. */
function eachChain(objects: readonly NftObject[] | undefined, check: (rules: readonly NftRule[]) => boolean): boolean {
  if (objects === undefined) return false;
  const chains = objects.flatMap((o) => (o.chain === undefined ? [] : [o.chain]));
  const rules = objects.flatMap((o) => (o.rule === undefined ? [] : [o.rule]));
  if (chains.length !== CHAINS.length) return false;
  return CHAINS.every(({ name, hook }) => {
    const chain = chains.find((c) => c.name === name);
    const shaped = chain?.type === 'nat' && chain.hook === hook && chain.prio === NAT_PRIORITY && chain.policy === 'accept';
    return shaped && check(rules.filter((r) => r.chain === name));
  });
}

const isDnat = (expr: unknown): boolean => typeof expr === 'object' && expr !== null && 'dnat' in expr;

/** The rule's daddr and dport matches and its DNAT, as nft's JSON schema writes them; counters and the like may be added. */
function redirects(expr: readonly unknown[], { family, address }: RedirectTarget, port: number): boolean {
  const has = (wanted: unknown) => expr.some((e) => isDeepStrictEqual(e, wanted));
  return (
    has({ match: { op: '==', left: { payload: { protocol: family, field: 'daddr' } }, right: address } }) &&
    has({ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 80 } }) &&
    has({ match: { op: '==', left: { '&': [{ payload: { protocol: 'tcp', field: 'flags' } }, ['syn', 'ack']] }, right: 'syn' } }) &&
    has({ dnat: { family, addr: address, port } })
  );
}
