/**
 * The fault suite's driver: emitting fibers on a real emitter that record every receipt and every
 * error with its time, so a scenario can say what happened before, during and after its fault,
 * and checks shared by the scenarios (every receipt delivered by id, seqnums gap-free per key).
 */
import { assert } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import type { Emitter } from "../../src/Emitter.ts"
import type { ReceivedEvent } from "../../src/testing/IngestServer.ts"

export interface Receipted {
  readonly id: string
  readonly seq: bigint
  readonly source: string
  readonly type: string
  /** When the emit was called, and when it returned. */
  readonly startedAt: number
  readonly at: number
}

export interface Failed {
  readonly tag: string
  readonly retryable: boolean
  readonly committed: string | undefined
  readonly message: string
  /** The `data` of the event that failed, to look for it at the server. */
  readonly token: string
  readonly startedAt: number
  readonly at: number
}

export const keyOf = (e: { readonly source: string; readonly type: string }) => `${e.source} ${e.type}`

/** Emits from `fibers` fibers until `stop`; on an error the fiber pauses 20 ms (a caller backing off). */
export const startEmitting = (emitter: Emitter["Service"], fibers: number, keys: ReadonlyArray<readonly [string, string]>) =>
  Effect.gen(function*() {
    const receipts: Array<Receipted> = []
    const failures: Array<Failed> = []
    let running = true
    const loop = (fiber: number) =>
      Effect.gen(function*() {
        for (let n = 0; running; n++) {
          const [source, type] = keys[(fiber + n) % keys.length]!
          const token = `f${fiber}-${n}`
          const startedAt = Date.now()
          const outcome = yield* Effect.result(emitter.emit({ source, type, data: { token } }))
          const at = Date.now()
          if (outcome._tag === "Success") receipts.push({ ...outcome.success, startedAt, at })
          else {
            const error = outcome.failure as { _tag: string; retryable: boolean; committed?: string; message: string }
            failures.push({ tag: error._tag, retryable: error.retryable, committed: error.committed, message: error.message, token, startedAt, at })
            yield* Effect.sleep(20)
          }
        }
      })
    const running_ = yield* Effect.forEach(Array.from({ length: fibers }, (_, i) => i), (i) => Effect.forkChild(loop(i)))
    return {
      receipts,
      failures,
      stop: Effect.suspend(() => {
        running = false
        return Fiber.joinAll(running_)
      })
    }
  })

/** Polls `check` every 50 ms; answers when it first held, or dies after `timeoutMs` with `describe()`. */
export const waitUntil = <E, R>(what: string, timeoutMs: number, check: Effect.Effect<boolean, E, R>, describe: () => string = () => "") =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`${what}: not within ${timeoutMs} ms ${describe()}`))
      yield* Effect.sleep(50)
    }
    return Date.now()
  })

const tokenOf = (event: ReceivedEvent) => {
  const data = event.data
  if (data === undefined) return ""
  const text = typeof data === "string" ? data : Buffer.from(data).toString("utf8")
  return /"token":"([^"]+)"/.exec(text)?.[1] ?? ""
}

/**
 * Every receipt delivered, with its seq as seqnum; per key the distinct seqnums delivered are
 * exactly 1..n (nothing committed lost, no gap); no event whose emit said `committed: "no"` was
 * delivered. Answers the duplicate count (deliveries beyond the first of an id).
 */
export const assertDelivered = (
  receipts: ReadonlyArray<Receipted>,
  failures: ReadonlyArray<Failed>,
  events: ReadonlyArray<ReceivedEvent>
) => {
  const byId = new Map<string, Array<ReceivedEvent>>()
  for (const e of events) byId.set(e.id, [...(byId.get(e.id) ?? []), e])
  for (const r of receipts) {
    const got = byId.get(r.id)
    assert.isDefined(got, `receipt ${r.id} (${keyOf(r)} #${r.seq}) never delivered`)
    for (const d of got!) assert.strictEqual(d.seqnum, r.seq.toString(), `seqnum of ${r.id}`)
  }
  const seqs = new Map<string, Set<number>>()
  for (const list of byId.values()) {
    const key = keyOf(list[0]!)
    seqs.set(key, (seqs.get(key) ?? new Set()).add(Number(list[0]!.seqnum)))
  }
  for (const [key, set] of seqs) {
    const sorted = [...set].sort((a, b) => a - b)
    assert.deepStrictEqual(sorted, Array.from({ length: sorted.length }, (_, i) => i + 1), `${key}: seqnums gap-free`)
  }
  const deliveredTokens = new Set(events.map(tokenOf))
  const refusedButDelivered = failures.filter((f) => f.committed === "no" && deliveredTokens.has(f.token))
  assert.deepStrictEqual(refusedButDelivered.map((f) => `${f.token}: ${f.message}`), [], "said committed: no, but delivered")
  const unknownDelivered = failures.filter((f) => f.committed === "unknown" && deliveredTokens.has(f.token)).length
  return { duplicates: events.length - byId.size, unknownDelivered }
}

/** "CommitFailed/no ×3, CommitFailed/unknown ×1": the failures by kind, for the log line. */
export const failureSummary = (failures: ReadonlyArray<Failed>) => {
  const counts = new Map<string, number>()
  for (const f of failures) {
    const kind = `${f.tag}/${f.committed ?? "-"}${f.retryable ? "" : "/NOT-retryable"}`
    counts.set(kind, (counts.get(kind) ?? 0) + 1)
  }
  return [...counts].map(([kind, n]) => `${kind} ×${n}`).join(", ") || "none"
}
