import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';

/** A TCP socket listening in this network namespace, from /proc/net/tcp and tcp6. */
export interface Listener {
  readonly address: string;
  readonly port: number;
  /** The socket's inode: what /proc/PID/fd/N links to (`socket:[INODE]`). */
  readonly inode: string;
}

const LISTEN = '0A';

/**
 * Every listening TCP socket of the network namespace this process runs in (the host's, on the
 * host network): read from the kernel's tables, not by connecting, so that the answer does not
 * depend on which of several SO_REUSEPORT listeners a connection would land on.
 */
export async function listeningSockets(procNet = '/proc/net'): Promise<Listener[]> {
  const tables = await Promise.all(
    (['tcp', 'tcp6'] as const).map((name) =>
      readFile(join(procNet, name), 'utf8').catch((error: NodeJS.ErrnoException) => {
        // No tcp6 on a kernel booted with IPv6 disabled.
        if (error.code === 'ENOENT') return '';
        throw error;
      }),
    ),
  );
  return tables.flatMap((table) => table.split('\n').slice(1).flatMap(parseLine));
}

/** `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...` */
function parseLine(line: string): Listener[] {
  const fields = line.trim().split(/\s+/);
  const [local, state, inode] = [fields[1], fields[3], fields[9]];
  if (local === undefined || state !== LISTEN || inode === undefined) return [];
  const [hex, port] = local.split(':') as [string, string];
  const address = hex.length === 8 ? decodeIpv4(hex) : decodeIpv6(hex);
  return address === undefined ? [] : [{ address, port: Number.parseInt(port, 16), inode }];
}

/** The kernel prints each 32-bit word of the address in host byte order. */
function wordBytes(hex: string): number[] {
  const bytes = [0, 2, 4, 6].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));
  return endianness() === 'LE' ? bytes.reverse() : bytes;
}

function decodeIpv4(hex: string): string {
  return wordBytes(hex).join('.');
}

function decodeIpv6(hex: string): string | undefined {
  if (hex.length !== 32) return undefined;
  const bytes = [0, 8, 16, 24].flatMap((i) => wordBytes(hex.slice(i, i + 8)));
  const groups = [0, 2, 4, 6, 8, 10, 12, 14].map((i) => ((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // The URL parser writes an IPv6 address in its canonical compressed form, as fd00:ec2::23 is written.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}
