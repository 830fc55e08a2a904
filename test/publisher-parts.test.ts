/**
 * The delivery policy as a table: pure functions over data, no clock, no transport, no store.
 * Then the pieces the Publisher is built from: the retry Schedule (stepped, and on the TestClock),
 * the batching routine, the one settle, and the background loops' Schedule.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Metric, Queue, Random, Schedule } from "effect"
import { TestClock } from "effect/testing"
import { loopSchedule } from "../src/Liveness.ts"
import * as Metrics from "../src/Metrics.ts"
import * as Barrier from "../src/publisher/Barrier.ts"
import { byLease, type Decision, decide, type RequestResult } from "../src/publisher/decide.ts"
import { item, makeSettle } from "../src/publisher/Item.ts"
import { retrySchedule } from "../src/publisher/retrySchedule.ts"
import * as TakeBatch from "../src/publisher/takeBatch.ts"
import { TransportError } from "../src/Transport.ts"

const items = ["a", "b", "c", "d"] as const
const delivered = { _tag: "Delivered" } as const
const rejected = (code: string) => ({ _tag: "Rejected", code, reason: `why ${code}` }) as const
const failed = (fields: ConstructorParameters<typeof TransportError>[0]): RequestResult => ({ _tag: "Failed", error: new TransportError(fields) })

const table: ReadonlyArray<readonly [string, ReadonlyArray<string>, RequestResult, Decision<string>]> = [
  ["all delivered", items, { _tag: "Answered", results: [delivered, delivered, delivered, delivered] }, { _tag: "Done", delivered: items, rejected: [] }],
  [
    "a permanent per-event code is dead-lettered, the rest delivered",
    items,
    { _tag: "Answered", results: [delivered, rejected("SCHEMA_MISSING"), delivered, delivered] },
    { _tag: "Done", delivered: ["a", "c", "d"], rejected: [{ item: "b", code: "SCHEMA_MISSING", reason: "why SCHEMA_MISSING" }] }
  ],
  [
    "a retryable per-event code is retried alone",
    items,
    { _tag: "Answered", results: [delivered, delivered, rejected("UNKNOWN"), rejected("VALIDATION_FAILED")] },
    {
      _tag: "Retry",
      delivered: ["a", "b"],
      rejected: [{ item: "d", code: "VALIDATION_FAILED", reason: "why VALIDATION_FAILED" }],
      items: ["c"],
      retryAfterMs: undefined
    }
  ],
  [
    "a retryable request failure retries everything, carrying the push-back",
    items,
    failed({ kind: "retryable", code: "unavailable", reason: "busy", retryAfterMs: 3_000 }),
    { _tag: "Retry", delivered: [], rejected: [], items, retryAfterMs: 3_000 }
  ],
  ["a transport defect is retried", items, { _tag: "Defect" }, { _tag: "Retry", delivered: [], rejected: [], items, retryAfterMs: undefined }],
  [
    "a server that asks not to retry gets no retry",
    items,
    failed({ kind: "retryable", code: "unavailable", reason: "draining", doNotRetry: true }),
    { _tag: "GiveUp", items, why: "the server asked not to retry" }
  ],
  [
    "a configuration fault leaves the rows to the retransmitter",
    items,
    failed({ kind: "config", code: "unauthenticated", reason: "no token" }),
    { _tag: "GiveUp", items, why: "publish failed (config, unauthenticated): no token" }
  ],
  [
    "a permanent request failure of several events bisects",
    ["a", "b", "c"],
    failed({ kind: "permanent", code: "invalid_argument", reason: "bad" }),
    { _tag: "Bisect", halves: [["a", "b"], ["c"]] }
  ],
  [
    "a permanent request failure of one event dead-letters it",
    ["c"],
    failed({ kind: "permanent", code: "invalid_argument", reason: "bad" }),
    { _tag: "DeadLetter", items: ["c"], code: "invalid_argument", reason: "bad" }
  ]
]

describe("decide", () => {
  for (const [name, input, result, expected] of table) {
    it(name, () => assert.deepStrictEqual(decide(input, result), expected))
  }

  it("byLease keeps what a request can still cover and lapses the rest", () => {
    const row = (id: string, leaseUntil: number) => ({ id, event: { leaseUntil } })
    const rows = [row("a", 1_000), row("b", 2_000), row("c", 1_499)]
    assert.strictEqual(byLease(rows, 500).live, rows, "nothing lapsed: the same array, no copy")
    const { lapsed, live } = byLease(rows, 1_500)
    assert.deepStrictEqual(live.map((r) => r.id), ["b"])
    assert.deepStrictEqual(lapsed.map((r) => r.id), ["a", "c"])
  })
})

/** The delays a schedule gives for successive inputs (Random fixed at 0.5: no jitter). */
const delays = (inputs: ReadonlyArray<{ retryAfterMs: number | undefined; elapsedMs: number }>) =>
  Effect.gen(function*() {
    const step = yield* Schedule.toStep(retrySchedule({ retryBaseDelayMs: 100, retryMaxDelayMs: 1_000, retryBudgetMs: 5_000 }))
    const out: Array<number | "done"> = []
    for (const input of inputs) {
      const exit = yield* Effect.exit(step(0, input))
      out.push(Exit.isSuccess(exit) ? Duration.toMillis(exit.value[1]) : "done")
    }
    return out
  }).pipe(Effect.provideService(Random.Random, { nextIntUnsafe: () => 0, nextDoubleUnsafe: () => 0.5 }))

describe("retrySchedule", () => {
  it.effect("doubles from the base, caps, floors by the push-back, and ends at the budget", () =>
    Effect.gen(function*() {
      const no = undefined
      assert.deepStrictEqual(
        yield* delays([
          { retryAfterMs: no, elapsedMs: 0 },
          { retryAfterMs: no, elapsedMs: 100 },
          { retryAfterMs: no, elapsedMs: 300 },
          { retryAfterMs: no, elapsedMs: 700 },
          { retryAfterMs: no, elapsedMs: 1_500 },
          { retryAfterMs: 3_000, elapsedMs: 1_500 },
          { retryAfterMs: no, elapsedMs: 4_500 }
        ]),
        [100, 200, 400, 800, 1_000, 3_000, "done"]
      )
    }))

  it.effect("a retry waits out the server's Retry-After, on the TestClock", () =>
    Effect.gen(function*() {
      const schedule = retrySchedule({ retryBaseDelayMs: 100, retryMaxDelayMs: 1_000, retryBudgetMs: 30_000 })
      let attempts = 0
      const busy = Effect.suspend(() =>
        ++attempts < 3
          ? Effect.fail({ retryAfterMs: 2_500, elapsedMs: 0 })
          : Effect.succeed(attempts)
      )
      const fiber = yield* Effect.forkChild(Effect.retry(busy, schedule))
      yield* TestClock.adjust(2_499)
      assert.strictEqual(attempts, 1)
      yield* TestClock.adjust(1)
      assert.strictEqual(attempts, 2)
      yield* TestClock.adjust(2_500)
      assert.strictEqual(yield* Fiber.join(fiber), 3)
    }))
})

describe("takeBatch", () => {
  it.effect("fills by count and bytes, holds back what does not fit, and lingers once", () =>
    Effect.gen(function*() {
      const queue = yield* Queue.unbounded<number>()
      const limits: TakeBatch.BatchLimits<number> = { maxWeight: 3, bytes: { max: 10, overhead: 1, of: (n) => n }, lingerMs: 20 }
      yield* Queue.offerAll(queue, [2, 3, 5, 1])
      const first = yield* TakeBatch.take(queue, limits)
      assert.deepStrictEqual(first.items, [2, 3])
      assert.strictEqual(first.held, 5)
      const second = yield* Effect.forkChild(TakeBatch.take(queue, limits, first.held))
      yield* Effect.yieldNow
      yield* Queue.offer(queue, 2)
      yield* TestClock.adjust(20)
      const batch = yield* Fiber.join(second)
      assert.deepStrictEqual(batch.items, [5, 1, 2])
      assert.strictEqual(batch.held, undefined)
    }))
})

describe("settle", () => {
  it.effect("ends an item's life once: a second settle of the same items counts nothing", () =>
    Effect.gen(function*() {
      const barrier = Barrier.make()
      const settle = makeSettle(barrier)
      const event = { rowId: 1n, eventId: "e", source: "s", type: "t", seq: 1n, payload: new Uint8Array(), createdAt: 0, attempts: 0, leaseUntil: 0 }
      const items = [item(event, barrier.current()), item({ ...event, rowId: 2n }, barrier.current())]
      barrier.accepted(0, 2)
      const givenUp = Metric.withAttributes(Metrics.settled, { outcome: "GivenUp" })
      const before = (yield* Metric.value(givenUp)).count
      yield* settle(items, { _tag: "GivenUp", why: "test" })
      yield* settle(items, { _tag: "Abandoned", why: "a recovery path settling the whole batch" })
      assert.strictEqual(barrier.pending(), 0)
      assert.strictEqual((yield* Metric.value(givenUp)).count - before, 2)
      assert.deepStrictEqual(items.map((i) => i.stage), ["settled", "settled"])
      yield* barrier.flush
    }))
})

describe("loopSchedule", () => {
  it.effect("waits the interval after a quiet tick and nothing after a busy one", () =>
    Effect.gen(function*() {
      const step = yield* Schedule.toStep(loopSchedule(1_000))
      const delay = (more: boolean) => Effect.map(step(0, more), ([, d]) => Duration.toMillis(d))
      assert.deepStrictEqual([yield* delay(false), yield* delay(true), yield* delay(false)], [1_000, 0, 1_000])
    }))
})
