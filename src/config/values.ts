import { isIP } from 'node:net';
import { parseDuration } from '../duration.ts';
import type { LogLevel } from '../observability/logger.ts';
import type { ConfigMapRef } from '../k8s/configmap-watch.ts';

// Value parsers for flag declarations: each takes the text given (or the declared default) and the
// flag's name for its message, and throws with the problem to report.

const CLUSTER_NAME = /^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$/;

export function parseClusterName(value: string, flag: string): string {
  if (!CLUSTER_NAME.test(value)) {
    throw new Error(`${flag} "${value}" is not a valid EKS cluster name (1-100 characters: letters, digits, - and _, starting with a letter or digit)`);
  }
  return value;
}

const REGION = /^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$/;

export function parseRegion(value: string): string {
  if (!REGION.test(value)) throw new Error(`region "${value}" is not an AWS region name (like us-west-2)`);
  return value;
}

export function parseBindHosts(values: readonly string[], flag: string): string[] {
  const hosts = values.flatMap((value) => value.split(',')).map((host) => host.trim()).filter((host) => host !== '');
  if (hosts.length === 0) throw new Error(`${flag} is empty`);
  const unbracketed = hosts.map((host) => parseAddress(host, flag));
  return [...new Set(unbracketed)];
}

/** An IP literal, IPv6 with or without brackets, returned without brackets. */
export function parseAddress(value: string, flag: string): string {
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
  if (isIP(bare) === 0) throw new Error(`${flag}: "${value}" is not an IP address`);
  return bare;
}

export function parsePort(value: string, flag: string): number {
  // 0 asks the kernel for a free port: useful for tests, never a production setting.
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) throw new Error(`${flag}: "${value}" is not a port number (0-65535)`);
  return Number(value);
}

/** Where initialize redirects port 80 to: neither 0 (no fixed port to redirect to) nor 80 itself. */
export function parseRedirectPort(value: string, flag: string): number {
  const port = parsePort(value, flag);
  if (port === 0 || port === 80) throw new Error(`${flag} must be a port other than 0 and 80`);
  return port;
}

/** A parser for whole numbers of at least `min`. */
export function count(min: number): (value: string, flag: string) => number {
  return (value, flag) => {
    if (!/^\d{1,9}$/.test(value) || Number(value) < min) throw new Error(`${flag}: "${value}" is not a whole number >= ${min}`);
    return Number(value);
  };
}

/** Milliseconds, from a Go-style duration. */
export function parseDurationFlag(value: string, flag: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new Error(`${flag}: "${value}" is not a duration (like 3h, 90m or 45s)`);
  return ms;
}

export function parseAudience(value: string, flag: string): string {
  if (value.trim() === '') throw new Error(`${flag} is empty`);
  return value;
}

/** A parser accepting exactly one of `choices`. */
export function choice<T extends string>(choices: readonly T[]): (value: string, flag: string) => T {
  return (value, flag) => {
    const chosen = choices.find((candidate) => candidate === value);
    if (chosen === undefined) throw new Error(`${flag}: "${value}" is not one of ${choices.join(', ')}`);
    return chosen;
  };
}

const LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/** The reference takes a number; names are accepted too. 0 is the quietest. */
export function parseVerbosity(value: string, flag: string): LogLevel {
  if (/^\d+$/.test(value)) return LEVELS[Math.min(Number(value), LEVELS.length - 1)] as LogLevel;
  const level = LEVELS.find((name) => name === value.toLowerCase());
  if (level === undefined) throw new Error(`${flag}: "${value}" is not 0-5 or one of ${LEVELS.join(', ')}`);
  return level;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function parseConfigMapRef(value: string, flag: string): ConfigMapRef {
  const [namespace, name, extra] = value.split('/');
  if (namespace === undefined || name === undefined || extra !== undefined || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(name)) {
    throw new Error(`${flag}: "${value}" is not NAMESPACE/NAME`);
  }
  return Object.freeze({ namespace, name });
}

const CLUSTER_ARN = /^arn:aws[a-z-]*:eks:[a-z0-9-]+:\d{12}:cluster\/[0-9A-Za-z][A-Za-z0-9_-]{0,99}$/;

export function parseClusterArn(value: string, flag: string): string {
  if (!CLUSTER_ARN.test(value)) throw new Error(`${flag}: "${value}" is not an EKS cluster ARN (arn:aws:eks:REGION:ACCOUNT:cluster/NAME)`);
  return value;
}

const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** A taint key as Kubernetes takes it: NAME or DNS-SUBDOMAIN/NAME, the name at most 63 characters. */
export function parseTaintKey(value: string, flag: string): string {
  const parts = value.split('/');
  const [prefix, name] = parts.length === 2 ? parts : [undefined, parts[0]];
  if (parts.length > 2 || name === undefined || !QUALIFIED_NAME.test(name) || (prefix !== undefined && !DNS_SUBDOMAIN.test(prefix))) {
    throw new Error(`${flag}: "${value}" is not a taint key (NAME or DNS-SUBDOMAIN/NAME; the name at most 63 letters, digits, -, _ and .)`);
  }
  return value;
}
