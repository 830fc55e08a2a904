/** Emitter options for recovery tests: short leases and timeouts, within the validation rules. */
import type { EmitterOptionsInput } from "../../src/Config.ts"

/** firstLease and leaseBase exceed 1.25 × requestTimeout, as Config requires. */
export const fastRecovery = (prefix: string, ingestUrl: string): EmitterOptionsInput => ({
  ingestUrl,
  tablePrefix: prefix,
  maxConnections: 4,
  requestTimeout: 300,
  firstLease: 1_000,
  leaseBase: 500,
  leaseMax: 2_000,
  retransmitInterval: 100,
  retryBaseDelay: 20,
  retryMaxDelay: 100,
  retryBudget: 150,
  shutdownTimeout: 2_000,
  statsInterval: 1_000
})
