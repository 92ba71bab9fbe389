import { run } from './command.ts';
import { LINK_NAME, findLink, onAgentAddress } from './initialize.ts';
import { NO_MARK, parseMark, writeMark } from './link-mark.ts';
import { listeningSockets } from './listeners.ts';
import { TABLE, removeRedirect } from './port-redirect.ts';
import { MIGRATE_REQ_SETTING, restoreMigrateReq } from './sysctl.ts';

export interface RemoveOptions {
  /** Where the host network's sysctls are (the sysctl is restored there); undefined: left alone. */
  readonly procSys?: string | undefined;
  /** The agent's own port: its listeners (an agent still draining) do not keep the link. */
  readonly redirectPort: number | undefined;
  readonly log: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

/**
 * `initialize --remove`: undoes exactly what `initialize` did, so that another agent (the EKS add-on,
 * binding 169.254.170.23:80 itself) serves pods at once. The redirect table always goes (it is this
 * agent's by name). The link, with its addresses and routes, goes only if this agent created it (its
 * mark) and nothing else listens on its addresses: the add-on, if it runs, keeps the link it needs,
 * and the mark comes off, so the link is theirs from then on. tcp_migrate_req gets back the value
 * recorded when `initialize` changed it. A second run finds nothing and says so.
 */
export async function remove(options: RemoveOptions): Promise<readonly string[]> {
  const changes: string[] = [];
  const changed = (change: string) => {
    changes.push(change);
    options.log('info', change);
  };
  if (await removeRedirect()) changed(`removed the redirect of port 80 (nftables table inet ${TABLE})`);

  const link = await findLink(LINK_NAME);
  const mark = parseMark(link?.ifalias);
  if (mark.migrateReqWas !== undefined && options.procSys !== undefined) {
    if (await restoreMigrateReq(options.procSys, mark.migrateReqWas)) changed(`restored ${MIGRATE_REQ_SETTING} = ${mark.migrateReqWas}`);
    else options.log('info', `left ${MIGRATE_REQ_SETTING} as it is: it is no longer the 1 that initialize set`);
  }
  if (link !== undefined && mark.created) {
    const others = (await listeningSockets()).filter((l) => onAgentAddress(l) && l.port !== options.redirectPort);
    if (others.length === 0) {
      // Its addresses and routes go with it; so does a veth pair's peer.
      await run('ip', ['link', 'del', 'dev', LINK_NAME]);
      changed(`deleted ${LINK_NAME} with its addresses and routes`);
    } else {
      await writeMark(LINK_NAME, NO_MARK);
      const listening = [...new Set(others.map((l) => (l.address.includes(':') ? `[${l.address}]:${l.port}` : `${l.address}:${l.port}`)))];
      changed(`kept ${LINK_NAME}: another program listens on ${listening.join(', ')} (the EKS Pod Identity Agent add-on, say); the link is left to it`);
    }
  } else if (link !== undefined && mark.migrateReqWas !== undefined) {
    await writeMark(LINK_NAME, NO_MARK);
    changed(`removed this agent's note from ${LINK_NAME}'s alias; the link is not this agent's and stays`);
  } else if (link !== undefined) {
    options.log('info', `left ${LINK_NAME}: this agent did not create it (the EKS add-on's init container makes one of the same name)`);
  }
  if (changes.length === 0) options.log('info', 'nothing of this agent left on the node: nothing changed');
  return changes;
}
