import { isIPv6 } from 'node:net';

const HOST_CHARS = /^[A-Za-z0-9.:[\]-]+$/;
const MAX_REMEMBERED = 64;

/**
 * Whether a Host header names one of the bind hosts, with or without a port, IPv6 with or
 * without brackets. Exact matches of the usual forms are answered from a set, without parsing.
 */
export function createHostCheck(bindHosts: readonly string[], port: number): (host: string | undefined) => boolean {
  const canonical = new Set(bindHosts.map((host) => canonicalHost(host)));
  const fast = new Set<string>();
  for (const host of canonical) {
    fast.add(host);
    fast.add(`${host}:${port}`);
  }
  return (header) => {
    if (header === undefined || header === '') return false;
    if (fast.has(header)) return true;
    const host = parseHostHeader(header);
    if (host === undefined || !canonical.has(host)) return false;
    // Another accepted spelling (say, with the port pods connect to, 80, or the one the system chose
    // for --port 0): remembered, so its next request skips the URL parse. Bounded: ports are many.
    if (fast.size < MAX_REMEMBERED) fast.add(header);
    return true;
  };
}

/** The hostname as WHATWG URL writes it: lower case, IPv6 bracketed and compressed. */
function canonicalHost(address: string): string {
  return new URL(`http://${isIPv6(address) ? `[${address}]` : address}`).hostname;
}

function parseHostHeader(header: string): string | undefined {
  if (header.length > 300 || !HOST_CHARS.test(header)) return undefined;
  // A bare IPv6 address ("fd00:ec2::23") is not a valid Host, but some clients send it.
  const authority = isIPv6(header) ? `[${header}]` : header;
  try {
    const url = new URL(`http://${authority}`);
    return url.pathname === '/' && url.username === '' ? url.hostname : undefined;
  } catch {
    return undefined;
  }
}
