import type { LogLevel } from '../observability/logger.ts';
import type { LinkType } from '../netsetup/initialize.ts';
import { ConfigError, type FlagTable, collectProblems, parseFlags, readFlag, renderUsage } from './flag-table.ts';
import { choice, parseRedirectPort, parseVerbosity } from './values.ts';

/** `initialize`: flags for the node set-up. */
export interface InitializeConfig {
  readonly ipv6: boolean;
  readonly linkType: LinkType;
  readonly redirectPort: number | undefined;
  /** --proc-sys: where net.ipv4.tcp_migrate_req is set. */
  readonly procSys: string;
  /** Stay running, putting back what other programs remove, until SIGTERM. */
  readonly watch: boolean;
  /** With watch: the directory shared with the agent's preStop hook, for the hand-over on SIGTERM. */
  readonly handoverDir: string | undefined;
  /** Undo what `initialize` did, instead of setting up. */
  readonly remove: boolean;
  readonly logLevel: LogLevel;
}

/** `initialize`'s flags, in the README's order; test/flag-table.test.ts holds the README's table to this one. */
export const INITIALIZE_FLAGS = {
  'no-ipv6': { type: 'boolean', help: 'skip fd00:ec2::23' },
  'link-type': {
    type: 'string',
    value: 'TYPE',
    default: 'auto',
    help: 'auto (dummy, else a veth pair where the kernel has no dummy), dummy or veth',
    parse: choice(['auto', 'dummy', 'veth'] as const),
  },
  'redirect-port': {
    type: 'string',
    value: 'N',
    help: 'redirect TCP port 80 of the addresses to N (nftables), for an agent that runs unprivileged on port N, once something answers on N (never before); with --remove: the agent\'s port, whose listeners do not keep the link',
    parse: parseRedirectPort,
  },
  'proc-sys': {
    type: 'string',
    value: 'DIR',
    default: '/proc/sys',
    help: 'the host network\'s sysctls, where net.ipv4.tcp_migrate_req is set to 1 (a container\'s /proc/sys is read-only: the DaemonSet mounts the host\'s)',
  },
  watch: {
    type: 'boolean',
    help: 'keep the node\'s set-up in place for as long as this runs, repairing what other programs remove (until SIGTERM)',
  },
  'handover-dir': {
    type: 'string',
    value: 'DIR',
    help: 'with --watch: on SIGTERM, remove the redirect unless another agent listens on the --redirect-port, then write DIR/handed-over (the agent\'s preStop hook waits for it)',
  },
  remove: {
    type: 'boolean',
    help: 'undo what initialize did: the redirect; the link with its addresses and routes if this agent created it and nothing else listens on them; tcp_migrate_req as it was',
  },
  verbosity: { type: 'string', short: 'v', value: 'LEVEL', default: 'info', help: 'as for server', parse: parseVerbosity },
} as const satisfies FlagTable;

export const INITIALIZE_USAGE: string = renderUsage(
  `Usage: pod-identity-agent initialize [flags]

Gives this node the link pod-id-link0 with 169.254.170.23/32 and fd00:ec2::23/128 and routes to
them; with --remove, takes off what it gave. Idempotent; needs NET_ADMIN only.
`,
  INITIALIZE_FLAGS,
);

/** Parses `initialize` flags; throws ConfigError naming every bad flag. */
export function parseInitializeArgs(argv: readonly string[]): { help: boolean; config?: InitializeConfig } {
  const values = parseFlags(INITIALIZE_FLAGS, argv);
  if (values.help === true) return { help: true };
  const { problems, check } = collectProblems();
  const linkType = check(() => readFlag(INITIALIZE_FLAGS, 'link-type', values['link-type']));
  const redirectPort = check(() => readFlag(INITIALIZE_FLAGS, 'redirect-port', values['redirect-port']));
  const logLevel = check(() => readFlag(INITIALIZE_FLAGS, 'verbosity', values.verbosity));
  const procSys = check(() => readFlag(INITIALIZE_FLAGS, 'proc-sys', values['proc-sys']));
  const watch = values.watch === true;
  const remove = values.remove === true;
  const handoverDir = values['handover-dir'];
  if (remove && watch) problems.push('--remove and --watch: one or the other');
  if (handoverDir !== undefined && !watch) problems.push('--handover-dir: only with --watch (the hand-over happens when the watcher stops)');
  if (handoverDir !== undefined && redirectPort === undefined) problems.push('--handover-dir: needs --redirect-port (the port whose other listeners it looks for)');
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    help: false,
    config: Object.freeze({ ipv6: values['no-ipv6'] !== true, linkType: linkType!, redirectPort, procSys: procSys!, watch, handoverDir, remove, logLevel: logLevel! }),
  };
}
