import type { parse } from 'yaml';
import { parseDuration } from '../duration.ts';

let parseYaml: typeof parse | undefined;

/**
 * Loads the YAML parser before the first parseAssociations(): only --upstream sts reads
 * associations, and evaluating the parser (120 KB of the bundle) took 5 ms of every start.
 */
export async function loadAssociationsParser(): Promise<void> {
  // The default export: bundled, a CommonJS package's dynamic import has no named ones.
  const yaml = (await import('yaml')) as unknown as { default: { parse: typeof parse } };
  parseYaml ??= yaml.default.parse;
}

/**
 * A pod identity association for the STS upstream, shaped like an EKS one: pods of this
 * service account get credentials for this role.
 */
export interface Association {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly roleArn: string;
  readonly externalId: string | undefined;
  /** Undefined: STS's default (one hour). */
  readonly sessionDurationSeconds: number | undefined;
  readonly disableSessionTags: boolean;
  /** A session policy, as compact JSON. */
  readonly policy: string | undefined;
  /** Where it was read, for messages: `file /etc/x.yaml entry 3`. */
  readonly origin: string;
}

/** What one document yields: the valid entries, and one message per refused entry. */
export interface ParsedAssociations {
  readonly associations: readonly Association[];
  readonly problems: readonly string[];
}

/** The document as a whole is unusable (not YAML/JSON, no `associations` list): nothing in it is applied. */
export class AssociationsDocumentError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AssociationsDocumentError';
  }
}

const FIELDS = new Set(['namespace', 'serviceAccount', 'roleArn', 'externalId', 'sessionDuration', 'disableSessionTags', 'policy']);
// Kubernetes names: a namespace is a DNS label, a service account a DNS subdomain.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
// STS's own limits on AssumeRole's parameters.
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const EXTERNAL_ID = /^[\w+=,.@:/-]{2,1224}$/;
const MIN_SESSION_SECONDS = 900;
const MAX_SESSION_SECONDS = 43_200;
const MAX_POLICY_CHARS = 2048;

/**
 * Parses a YAML or JSON document `{associations: [...]}`. Each entry is checked on its own: a bad
 * one is refused with a message naming it, and the rest still apply.
 */
export function parseAssociations(text: string, source: string): ParsedAssociations {
  if (parseYaml === undefined) throw new Error('parseAssociations() before loadAssociationsParser()');
  let document: unknown;
  try {
    document = parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    throw new AssociationsDocumentError(`${source}: not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}`, { cause: error });
  }
  const list = isObject(document) ? document.associations : undefined;
  if (!Array.isArray(list)) throw new AssociationsDocumentError(`${source}: expected an object with an "associations" list`);
  const associations: Association[] = [];
  const problems: string[] = [];
  list.forEach((entry: unknown, index) => {
    const origin = `${source} entry ${index + 1}`;
    try {
      associations.push(parseEntry(entry, origin));
    } catch (error) {
      problems.push(`${origin}${describe(entry)}: ${(error as Error).message}`);
    }
  });
  return { associations, problems };
}

function parseEntry(entry: unknown, origin: string): Association {
  if (!isObject(entry)) throw new Error('not an object');
  const unknown = Object.keys(entry).filter((key) => !FIELDS.has(key));
  if (unknown.length > 0) throw new Error(`unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((key) => `"${key}"`).join(', ')}`);
  const namespace = requiredString(entry, 'namespace');
  if (namespace.length > 63 || !DNS_LABEL.test(namespace)) throw new Error(`namespace "${namespace}" is not a Kubernetes namespace name`);
  const serviceAccount = requiredString(entry, 'serviceAccount');
  if (serviceAccount.length > 253 || !DNS_SUBDOMAIN.test(serviceAccount)) throw new Error(`serviceAccount "${serviceAccount}" is not a Kubernetes service account name`);
  const roleArn = requiredString(entry, 'roleArn');
  if (!ROLE_ARN.test(roleArn)) throw new Error(`roleArn "${roleArn}" is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)`);
  const externalId = optionalString(entry, 'externalId');
  if (externalId !== undefined && !EXTERNAL_ID.test(externalId)) throw new Error('externalId must be 2-1224 characters of letters, digits and +=,.@:/-');
  return {
    namespace,
    serviceAccount,
    roleArn,
    externalId,
    sessionDurationSeconds: parseSessionDuration(entry.sessionDuration),
    disableSessionTags: parseBoolean(entry.disableSessionTags),
    policy: parsePolicy(entry.policy),
    origin,
  };
}

function parseSessionDuration(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = typeof value === 'string' ? parseDuration(value) : undefined;
  if (ms === undefined) throw new Error(`sessionDuration ${JSON.stringify(value)} is not a duration (like 1h or 90m)`);
  const seconds = ms / 1000;
  if (!Number.isInteger(seconds) || seconds < MIN_SESSION_SECONDS || seconds > MAX_SESSION_SECONDS) {
    throw new Error(`sessionDuration "${value}" must be whole seconds from 15m to 12h (and at most the role's maximum session duration; 1h when the agent runs on role credentials)`);
  }
  return seconds;
}

function parseBoolean(value: unknown): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value !== 'boolean') throw new Error(`disableSessionTags must be true or false, not ${JSON.stringify(value)}`);
  return value;
}

/** A JSON string, or (more readable in YAML) the policy written out as an object. */
function parsePolicy(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  let policy: unknown = value;
  if (typeof value === 'string') {
    try {
      policy = JSON.parse(value);
    } catch {
      throw new Error('policy is not valid JSON');
    }
  }
  if (!isObject(policy)) throw new Error('policy must be a JSON policy document (an object)');
  const compact = JSON.stringify(policy);
  if (compact.length > MAX_POLICY_CHARS) throw new Error(`policy is ${compact.length} characters; STS takes at most ${MAX_POLICY_CHARS}`);
  return compact;
}

function requiredString(entry: Record<string, unknown>, key: string): string {
  const value = entry[key];
  if (typeof value !== 'string' || value === '') throw new Error(`${key} is required (a non-empty string)`);
  return value;
}

function optionalString(entry: Record<string, unknown>, key: string): string | undefined {
  const value = entry[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new Error(`${key} must be a string`);
  return value;
}

/** " (ns/sa)" when the entry names them, so a message points at the entry an operator wrote. */
function describe(entry: unknown): string {
  if (!isObject(entry)) return '';
  const { namespace, serviceAccount } = entry;
  return typeof namespace === 'string' && typeof serviceAccount === 'string' ? ` (${namespace}/${serviceAccount})` : '';
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
