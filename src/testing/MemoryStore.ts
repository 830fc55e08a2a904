/**
 * The in-memory Store, for tests: `MemoryStore.layer` gives a fresh, empty Store per build.
 * It lives in src/store beside the other implementations; this is where the test kit exports it.
 */
export { layer, make } from "../store/MemoryStore.ts"
