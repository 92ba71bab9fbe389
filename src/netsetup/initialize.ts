import { CommandError, ipJson, run } from './command.ts';
import { NO_MARK, mayMark, parseMark, writeMark } from './link-mark.ts';
import { type RedirectTarget, ensureRedirect, portAnswers, redirectInPlace } from './port-redirect.ts';
import { MIGRATE_REQ_SETTING, ensureMigrateReq } from './sysctl.ts';

export const LINK_NAME = 'pod-id-link0';
export const IPV4_ADDRESS = '169.254.170.23';
export const IPV6_ADDRESS = 'fd00:ec2::23';

/** Whether a listener is on one of the two addresses pods are sent to. */
export const onAgentAddress = (listener: { readonly address: string }): boolean => listener.address === IPV4_ADDRESS || listener.address === IPV6_ADDRESS;

export type LinkType = 'auto' | 'dummy' | 'veth';

export interface InitializeOptions {
  readonly ipv6: boolean;
  readonly linkType: LinkType;
  /**
   * When set, TCP to the addresses' port 80 is redirected to this port (see port-redirect.ts), once
   * something answers on it: never to a port nothing serves.
   */
  readonly redirectPort: number | undefined;
  /** Where the host network's sysctls are written (/proc/sys, or the host's mounted elsewhere); undefined: left alone. */
  readonly procSys?: string | undefined;
  readonly log: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

export interface InitializeReport {
  /** What this run changed; empty when the node was already set up. */
  readonly changes: readonly string[];
  readonly warnings: readonly string[];
  /** The redirect is wanted but not in place: nothing answers on its port yet. */
  readonly waitingForAgent: boolean;
}

/** `ip -json -details addr show`: the link's flags and kind with its addresses, read in one run. */
export interface Link {
  readonly ifname: string;
  readonly flags: readonly string[];
  readonly linkinfo?: { readonly info_kind?: string };
  /** The link's alias: where this agent marks the link as its own (link-mark.ts). */
  readonly ifalias?: string;
  readonly addr_info?: readonly { readonly family: string; readonly local: string; readonly prefixlen: number }[];
}

/**
 * Gives the node the agent's link-local addresses, the way the reference agent does: a link
 * `pod-id-link0` holding 169.254.170.23/32 and fd00:ec2::23/128, up, with routes to them. Reads
 * state first and changes only what is missing, so a second run changes nothing. IPv4 failures
 * throw; IPv6 failures (IPv6 disabled on the node) are warnings.
 */
export async function initialize(options: InitializeOptions, watching = false): Promise<InitializeReport> {
  // Logged as they happen, so that a failure's line follows the steps that did succeed.
  const report = await applySetup(options, (change) => options.log('info', change));
  if (report.waitingForAgent) {
    const nothing = `nothing answers on ${IPV4_ADDRESS}:${options.redirectPort} yet`;
    options.log('info', watching ? `the redirect waits for the agent: ${nothing}` : `not redirecting port 80: ${nothing} (initialize --watch redirects it once something does)`);
  }
  if (report.changes.length === 0) options.log('info', 'node already set up: nothing changed');
  return report;
}

/** One pass of the set-up: each change goes to onChange as it happens (the watcher batches them), warnings to the log. */
export async function applySetup(options: InitializeOptions, onChange: (change: string) => void): Promise<InitializeReport> {
  const changes: string[] = [];
  const warnings: string[] = [];
  const changed = (change: string) => {
    changes.push(change);
    onChange(change);
  };
  const link = await ensureLink(options, changed);
  await ensureAddress(link, 'inet', `${IPV4_ADDRESS}/32`, changed);
  await ensureRoute('-4', `${IPV4_ADDRESS}/32`, changed);
  const targets: RedirectTarget[] = [{ family: 'ip', address: IPV4_ADDRESS }];
  if (options.ipv6) {
    try {
      await ensureAddress(link, 'inet6', `${IPV6_ADDRESS}/128`, changed);
      await ensureRoute('-6', `${IPV6_ADDRESS}/128`, changed);
      targets.push({ family: 'ip6', address: IPV6_ADDRESS });
    } catch (error) {
      const warning = `IPv6 not set up, serving IPv4 only: ${(error as Error).message}`;
      warnings.push(warning);
      options.log('warn', warning);
    }
  }
  let waitingForAgent = false;
  const port = options.redirectPort;
  if (port !== undefined && !(await redirectInPlace(targets, port))) {
    // Pods sent to a port nothing serves fail, where the add-on (binding port 80 itself) would have
    // answered them: the redirect waits for the agent. During a surge the old agent answers.
    if (!(await portAnswers(IPV4_ADDRESS, port))) waitingForAgent = true;
    else if (await ensureRedirect(targets, port)) changed(`redirect TCP port 80 of ${targets.map((t) => t.address).join(', ')} to port ${port}`);
  }
  if (options.procSys !== undefined) {
    const migrate = await ensureMigrateReq(options.procSys);
    if (migrate !== 'unchanged' && 'set' in migrate) {
      changed(`set ${MIGRATE_REQ_SETTING} = 1`);
      // Recorded on the node for `initialize --remove`; never over another program's alias.
      if (mayMark(link.ifalias)) await writeMark(LINK_NAME, { ...parseMark(link.ifalias), migrateReqWas: migrate.set });
    } else if (migrate !== 'unchanged') {
      const warning = `connections queued at an agent that stops may be reset rather than handed to its successor: ${migrate.unavailable}`;
      warnings.push(warning);
      options.log('warn', warning);
    }
  }
  return { changes, warnings, waitingForAgent };
}

/** The link, created if missing, and up; returned as it is then, addresses included (one read when nothing changed). */
async function ensureLink(options: InitializeOptions, changed: (change: string) => void): Promise<Link> {
  let link = await findLink(LINK_NAME);
  if (link === undefined) {
    const kind = await createLink(options);
    // Marked as this agent's, so that `initialize --remove` deletes it (and never the add-on's).
    await writeMark(LINK_NAME, { ...NO_MARK, created: true });
    changed(`created ${kind} link ${LINK_NAME}`);
    link = (await findLink(LINK_NAME)) ?? { ifname: LINK_NAME, flags: [], linkinfo: { info_kind: kind } };
  }
  // A veth link carries traffic only while its peer is up too; a dummy link has no peer.
  const peer = link.linkinfo?.info_kind === 'veth' ? await findLink(`${LINK_NAME}-p`) : undefined;
  const stale = !link.flags.includes('UP');
  for (const { ifname, flags } of [link, ...(peer === undefined ? [] : [peer])]) {
    if (flags.includes('UP')) continue;
    await run('ip', ['link', 'set', ifname, 'up']);
    changed(`set ${ifname} up`);
  }
  // Taking a link down drops its IPv6 addresses (unless keep_addr_on_down): read what is left.
  return stale ? ((await findLink(LINK_NAME)) ?? link) : link;
}

export async function findLink(name: string): Promise<Link | undefined> {
  try {
    return (await ipJson<Link[]>(['-details', 'addr', 'show', 'dev', name]))[0];
  } catch (error) {
    if (error instanceof CommandError && /does not exist/i.test(error.stderr)) return undefined;
    throw error;
  }
}

/**
 * A dummy link, as the reference makes. Kernels built without the dummy driver (this project's CI
 * machine among them) refuse it; a veth pair whose peer stays unplugged holds addresses the same way.
 */
async function createLink(options: InitializeOptions): Promise<'dummy' | 'veth'> {
  if (options.linkType !== 'veth') {
    try {
      await run('ip', ['link', 'add', LINK_NAME, 'type', 'dummy']);
      return 'dummy';
    } catch (error) {
      if (options.linkType === 'dummy' || !(error instanceof CommandError && /unknown device type|not supported/i.test(error.stderr))) throw error;
      options.log('warn', `this kernel has no dummy link type; using a veth pair (${LINK_NAME}, ${LINK_NAME}-p) instead`, { error: error.stderr.trim() });
    }
  }
  await run('ip', ['link', 'add', LINK_NAME, 'type', 'veth', 'peer', 'name', `${LINK_NAME}-p`]);
  return 'veth';
}

async function ensureAddress(link: Link, family: 'inet' | 'inet6', cidr: string, changed: (change: string) => void): Promise<void> {
  const [address, prefix] = cidr.split('/') as [string, string];
  if ((link.addr_info ?? []).some((info) => info.family === family && info.local === address && info.prefixlen === Number(prefix))) return;
  // nodad: the address is ours alone on this link; waiting for duplicate detection only delays the agent.
  if (await added(['ip', [family === 'inet' ? '-4' : '-6', 'addr', 'add', cidr, 'dev', LINK_NAME, ...(family === 'inet6' ? ['nodad'] : [])]])) changed(`added ${cidr} to ${LINK_NAME}`);
}

async function ensureRoute(family: '-4' | '-6', cidr: string, changed: (change: string) => void): Promise<void> {
  const routes = await ipJson<{ dst: string }[]>([family, 'route', 'show', 'exact', cidr, 'dev', LINK_NAME]);
  if (routes.length > 0) return;
  if (await added(['ip', [family, 'route', 'add', cidr, 'dev', LINK_NAME]])) changed(`added route ${cidr} dev ${LINK_NAME}`);
}

/**
 * Adds, and says whether this run did. During a surge rollout the new pod's `initialize` and the old
 * pod's watcher may repair the same address or route at once: "File exists" is the other one's success.
 */
async function added([tool, args]: [string, string[]]): Promise<boolean> {
  try {
    await run(tool, args);
    return true;
  } catch (error) {
    if (error instanceof CommandError && /file exists/i.test(error.stderr)) return false;
    throw error;
  }
}
