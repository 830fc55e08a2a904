/**
 * The test kit: swap these in for the real Store and Transport in your tests, and run the
 * reference ingest server (in-process or as a separate process) to test against a real one.
 *
 * ```ts
 * const TestEmitter = DurableEmitter.layerNoDeps().pipe(
 *   Layer.provideMerge(Layer.mergeAll(MemoryStore.layer, ScriptedTransport.layer()))
 * )
 * ```
 */
export * from "./IngestServer.ts"
export * from "./IngestServerProcess.ts"
export * as MemoryStore from "./MemoryStore.ts"
export * from "./ScriptedTransport.ts"
