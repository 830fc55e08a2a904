/**
 * The Store contract against the embedded PGlite store, plus what only it has: the lock file on
 * its data directory, reopening, and surviving a SIGKILL.
 */
import { it } from "@effect/vitest"
import * as PgliteStore from "../src/store/PgliteStore.ts"
import { storeContract } from "./StoreContract.ts"

storeContract(it, PgliteStore.layer({ dataDir: PgliteStore.memory }))
