// Who a token names. Parsing yields the claimed identity; trust/ proves it into the verified one.

/** Who the token says it is, for logs. Absent claims stay undefined. */
export interface PodIdentity {
  readonly namespace: string | undefined;
  readonly serviceAccount: string | undefined;
  readonly podName: string | undefined;
  readonly podUid: string | undefined;
}

/** Who a verified token says the pod is; every field present. */
export interface VerifiedIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly podName: string;
  readonly podUid: string;
}
