// What a finished conversion's verification says, as one of four states, and how each is shown. The state is the
// contract's `status` (manifest `verification.status`, VerificationSummary.status); only "verified" is green.
import type { VerificationStatus } from "./api";

export type { VerificationStatus };

export const VERIFICATION_TEXT: Record<VerificationStatus, string> = {
  verified: "verified",
  verified_with_warnings: "verified with warnings",
  not_verified: "not verified",
  failed: "verification failed",
};

const KNOWN = new Set<string>(Object.keys(VERIFICATION_TEXT));

/** The status of a verification record or summary; null when there is none, "not_verified" when it is unknown. */
export function verificationStatus(ver: { status?: unknown } | null | undefined): VerificationStatus | null {
  if (!ver || typeof ver !== "object") return null;
  return typeof ver.status === "string" && KNOWN.has(ver.status) ? ver.status as VerificationStatus : "not_verified";
}

export function verificationText(s: VerificationStatus | null): string {
  return s ? VERIFICATION_TEXT[s] : "";
}
