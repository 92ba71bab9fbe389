import { run } from './command.ts';

/**
 * What `initialize` records on the node itself, in the alias of pod-id-link0 (`ip link show` prints
 * it), for `initialize --remove` to undo exactly that: whether this agent created the link (the EKS
 * add-on's init container makes a link of the same name, which is left to it), and the value of
 * net.ipv4.tcp_migrate_req before `initialize` set it to 1. On the node, not in the pod: the
 * uninstall runs after every pod of the agent is gone.
 */
export interface LinkMark {
  readonly created: boolean;
  /** The sysctl's value before `initialize` changed it; undefined: it did not change it. */
  readonly migrateReqWas: string | undefined;
}

const PREFIX = 'pod-identity-agent';
export const NO_MARK: LinkMark = { created: false, migrateReqWas: undefined };

/** The mark in an alias; NO_MARK for an alias that is not this agent's (or none). */
export function parseMark(alias: string | undefined): LinkMark {
  const words = (alias ?? '').split(' ');
  if (words[0] !== PREFIX) return NO_MARK;
  const was = words.find((word) => word.startsWith('tcp_migrate_req='))?.slice('tcp_migrate_req='.length);
  return { created: words.includes('created-link'), migrateReqWas: was !== undefined && /^\d+$/.test(was) ? was : undefined };
}

/** Whether an alias is absent or this agent's: another program's alias is never overwritten. */
export function mayMark(alias: string | undefined): boolean {
  return alias === undefined || alias === '' || alias.split(' ')[0] === PREFIX;
}

export function formatMark(mark: LinkMark): string {
  if (!mark.created && mark.migrateReqWas === undefined) return '';
  return [PREFIX, ...(mark.created ? ['created-link'] : []), ...(mark.migrateReqWas === undefined ? [] : [`tcp_migrate_req=${mark.migrateReqWas}`])].join(' ');
}

/** Writes the mark; an empty one removes the alias. */
export async function writeMark(link: string, mark: LinkMark): Promise<void> {
  await run('ip', ['link', 'set', 'dev', link, 'alias', formatMark(mark)]);
}
