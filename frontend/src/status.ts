// What a finished conversion's verification says, as one of four states, and how each is shown.
// The manifest's `verification.status` is used when present; older manifests (and job summaries) only carry
// `performed`, `passed` and the gradient check, from which the same states are derived. Only "verified" is green.
export type VerificationStatus = "verified" | "verified_with_warnings" | "not_verified" | "failed";

export const VERIFICATION_TEXT: Record<VerificationStatus, string> = {
  verified: "verified",
  verified_with_warnings: "verified with warnings",
  not_verified: "not verified",
  failed: "verification failed",
};

const KNOWN = new Set<string>(Object.keys(VERIFICATION_TEXT));

export interface VerificationLike {
  status?: unknown;
  performed?: unknown;
  passed?: unknown;
  gradients?: { missing?: unknown; errors?: unknown } | unknown;
  /** Job summaries carry only scalars: the number of variables without a gradient. */
  gradients_missing?: unknown;
  [k: string]: unknown;
}

export function verificationStatus(ver: VerificationLike | null | undefined): VerificationStatus | null {
  if (!ver || typeof ver !== "object") return null;
  if (typeof ver.status === "string" && KNOWN.has(ver.status)) return ver.status as VerificationStatus;
  if (ver.performed === false) return "not_verified";
  if (ver.passed === false) return "failed";
  const grads = (ver.gradients && typeof ver.gradients === "object" ? ver.gradients : {}) as { missing?: unknown; errors?: unknown };
  const missing = Array.isArray(grads.missing) ? grads.missing.length
    : typeof ver.gradients_missing === "number" ? ver.gradients_missing : 0;
  const errors = Array.isArray(grads.errors) ? grads.errors.length
    : typeof ver.gradient_errors === "number" ? ver.gradient_errors : 0;
  if (ver.passed === true) return missing || errors ? "verified_with_warnings" : "verified";
  return ver.performed === true ? "failed" : "not_verified";
}

export function verificationText(s: VerificationStatus | null): string {
  return s ? VERIFICATION_TEXT[s] : "";
}
