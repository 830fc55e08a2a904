/**
 * PgliteStore.append throughput: batches of 500 events with 256-byte payloads, one append at a
 * time (the embedded store has one connection), on disk and in memory.
 *
 *   npx node bench/pgliteAppend.ts [batches=200] [batchSize=500] [payloadBytes=256]
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type NewEvent, Store } from "../src/Store.ts"
import * as PgliteStore from "../src/store/PgliteStore.ts"

const [batches = 200, batchSize = 500, payloadBytes = 256] = process.argv.slice(2).map(Number)

const payload = new Uint8Array(payloadBytes).fill(7)
let n = 0
const batch = (): Array<NewEvent> =>
  Array.from({ length: batchSize }, () => ({
    eventId: crypto.randomUUID(),
    source: `source-${n % 4}`,
    type: `type-${n++ % 3}`,
    payload
  }))

const quantile = (sorted: ReadonlyArray<number>, q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!

const measure = (label: string, dataDir: string) =>
  Effect.gen(function*() {
    const store = yield* Store
    // warm up: statement preparation, first pages
    for (let i = 0; i < 5; i++) yield* store.append(batch(), { now: Date.now(), nextAttemptAt: Date.now() })
    const inputs = Array.from({ length: batches }, batch)
    const times: Array<number> = []
    const started = performance.now()
    for (const events of inputs) {
      const t = performance.now()
      const now = Date.now()
      yield* store.append(events, { now, nextAttemptAt: now })
      times.push(performance.now() - t)
    }
    const seconds = (performance.now() - started) / 1000
    times.sort((a, b) => a - b)
    const rows = batches * batchSize
    console.log(
      `${label}: ${rows} rows in ${seconds.toFixed(2)} s = ${Math.round(rows / seconds)} rows/s; ` +
        `per append of ${batchSize}: p50 ${quantile(times, 0.5).toFixed(1)} ms, p99 ${quantile(times, 0.99).toFixed(1)} ms`
    )
  }).pipe(Effect.provide(PgliteStore.layer({ dataDir })))

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "de-pglite-bench-"))
try {
  await Effect.runPromise(measure(`disk (${dir})`, dir))
  await Effect.runPromise(measure("memory", PgliteStore.memory))
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}
