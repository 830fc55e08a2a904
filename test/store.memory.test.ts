import { it } from "@effect/vitest"
import * as MemoryStore from "../src/testing/MemoryStore.ts"
import { storeContract } from "./StoreContract.ts"

storeContract(it, MemoryStore.layer)
