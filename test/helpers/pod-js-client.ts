// Runs inside the test's "pod" network namespace with the environment EKS injects: the AWS SDK for
// JavaScript's default chain resolves credentials, and this prints what it got (never the secret).
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';

try {
  const credentials = await fromNodeProviderChain()();
  process.stdout.write(JSON.stringify({ accessKeyId: credentials.accessKeyId, expiration: credentials.expiration?.toISOString(), hasSecret: credentials.secretAccessKey.length > 0 }));
} catch (error) {
  process.stdout.write(JSON.stringify({ error: (error as Error).message, code: (error as { Code?: string }).Code }));
}
