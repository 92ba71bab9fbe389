export type EndpointSource = '--endpoint' | 'AWS_ENDPOINT_URL_EKS_AUTH' | 'AWS_ENDPOINT_URL' | 'region';

export interface ResolvedEndpoint {
  readonly url: URL;
  readonly source: EndpointSource;
}

export interface EndpointInputs {
  readonly flag: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly region: string;
}

/**
 * The EKS Auth endpoint, following the SDKs' override convention: the flag, then the
 * service-specific variable, then the global one, then the partition's default host.
 */
export function resolveEndpoint({ flag, env, region }: EndpointInputs): ResolvedEndpoint {
  const overrides: [EndpointSource, string | undefined][] = [
    ['--endpoint', flag],
    ['AWS_ENDPOINT_URL_EKS_AUTH', env.AWS_ENDPOINT_URL_EKS_AUTH],
    ['AWS_ENDPOINT_URL', env.AWS_ENDPOINT_URL],
  ];
  for (const [source, value] of overrides) {
    if (value !== undefined && value !== '') return { url: parseEndpointUrl(value, source), source };
  }
  return { url: new URL(`https://${defaultHost(region, isTrue(env.AWS_USE_FIPS_ENDPOINT))}`), source: 'region' };
}

function defaultHost(region: string, fips: boolean): string {
  if (region.startsWith('cn-')) return `eks-auth.${region}.api.amazonwebservices.com.cn`;
  return fips ? `eks-auth-fips.${region}.api.aws` : `eks-auth.${region}.api.aws`;
}

/** An endpoint override: http(s), nothing but scheme, host, port and path. */
export function parseEndpointUrl(value: string, source: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`${source}: "${value}" is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new Error(`${source}: "${value}" must be an http or https URL`);
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new Error(`${source}: "${value}" must not carry credentials, a query or a fragment`);
  }
  return url;
}

function isTrue(value: string | undefined): boolean {
  return value !== undefined && value.toLowerCase() === 'true';
}
