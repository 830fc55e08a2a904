import { assert, describe, it } from "@effect/vitest"
import { Clock, Context, Effect, Exit, Fiber, Layer, Logger, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Config from "../src/Config.ts"
import { CommitFailed, EmitterClosed, EmitterOverloaded, StoreError } from "../src/Errors.ts"
import { Handoff } from "../src/Handoff.ts"
import { Sequencer, type SequencerOptions } from "../src/Sequencer.ts"
import type { NewEvent, StoredEvent } from "../src/Store.ts"
import * as ControlledStore from "./support/ControlledStore.ts"

const event = (n: number, source = "s", type = "t"): NewEvent => ({
  eventId: `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`,
  source,
  type,
  payload: new Uint8Array([n & 0xff])
})

const checkViolation = new StoreError({
  operation: "append",
  reason: "ConstraintError 23514: new row violates check constraint \"poison\"",
  retryable: false,
  committed: "no",
  driver: { kind: "ConstraintError", sqlState: "23514", phase: "query", detail: "new row violates check constraint" }
})

const setup = (overrides: Partial<SequencerOptions> = {}, logger: Layer.Layer<never> = Layer.empty) =>
  Effect.gen(function*() {
    const control = yield* ControlledStore.make
    const handed: Array<ReadonlyArray<StoredEvent>> = []
    const answered: Array<string> = []
    const handoff = Layer.succeed(Handoff, Handoff.of({ offer: (events) => Effect.sync(() => void handed.push(events)) }))
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Sequencer.layer({ ...Config.defaults, writeLingerMs: 0, ...overrides }).pipe(
        Layer.provide([ControlledStore.layer(control), handoff, logger])
      ),
      scope
    )
    return { control, handed, answered, sequencer: Context.get(context, Sequencer), scope }
  })

describe("Sequencer", () => {
  it.effect("group-commits concurrent submits into few appends and answers each in input order", () =>
    Effect.gen(function*() {
      const { control, handed, sequencer } = yield* setup()
      yield* control.appendGate.close
      const fibers = yield* Effect.forEach(Array.from({ length: 50 }, (_, i) => i), (i) =>
        Effect.forkChild(sequencer.submit([event(i)])))
      yield* Effect.yieldNow
      yield* control.appendGate.open
      const results = yield* Effect.forEach(fibers, Fiber.join)
      // The first committer took one event; the others were waiting and went together.
      assert.isAtMost(control.appends.length, 3)
      assert.strictEqual(control.appends.reduce((a, b) => a + b, 0), 50)
      const seqs = results.map((r) => Number(r[0]!.seq)).sort((a, b) => a - b)
      assert.deepStrictEqual(seqs, Array.from({ length: 50 }, (_, i) => i + 1))
      results.forEach((r, i) => assert.strictEqual(r[0]!.eventId, event(i).eventId))
      assert.strictEqual(handed.flat().length, 50)
    }))

  it.effect("commits a group in one append, even above the batch size", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ writeBatchSize: 2 })
      const result = yield* sequencer.submit([event(1), event(2, "s", "u"), event(3)])
      assert.deepStrictEqual(control.appends, [3])
      assert.deepStrictEqual(result.map((r) => r.seq), [1n, 1n, 2n])
    }))

  it.effect("answers no caller before the commit, and hands events off before answering", () =>
    Effect.gen(function*() {
      const { control, handed, sequencer } = yield* setup()
      yield* control.appendGate.close
      const fiber = yield* Effect.forkChild(sequencer.submit([event(1)]))
      yield* Effect.yieldNow
      assert.isUndefined(fiber.pollUnsafe())
      assert.strictEqual(handed.length, 0)
      yield* control.appendGate.open
      yield* Fiber.join(fiber)
      assert.strictEqual(handed.length, 1)
      assert.strictEqual(handed[0]![0]!.eventId, event(1).eventId)
    }))

  it.effect("waits for the linger to fill a batch", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ writeLingerMs: 10, writeBatchSize: 100 })
      const first = yield* Effect.forkChild(sequencer.submit([event(1)]))
      yield* TestClock.adjust(5)
      const second = yield* Effect.forkChild(sequencer.submit([event(2)]))
      yield* Effect.yieldNow
      assert.deepStrictEqual(control.appends, [])
      yield* TestClock.adjust(5)
      yield* Fiber.join(first)
      yield* Fiber.join(second)
      assert.deepStrictEqual(control.appends, [2])
    }))

  it.effect("does not linger when the batch is already full", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ writeLingerMs: 1000, writeBatchSize: 2 })
      yield* sequencer.submit([event(1), event(2)])
      assert.deepStrictEqual(control.appends, [2])
    }))

  it.effect("fails every caller of a failed batch with a typed, retryable error", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ commitTimeoutMs: 1000 })
      yield* control.appendGate.close
      control.failAppends = ControlledStore.connectionLost
      const fibers = yield* Effect.forEach([1, 2, 3], (i) => Effect.forkChild(Effect.flip(sequencer.submit([event(i)]))))
      yield* Effect.yieldNow
      yield* control.appendGate.open
      // The connection was lost: once the database has certainly ended the statement (the commit
      // budget, half of commitTimeout), the events are looked up, and were not committed.
      yield* TestClock.adjust(500)
      const errors = yield* Effect.forEach(fibers, Fiber.join)
      for (const error of errors) {
        assert.instanceOf(error, CommitFailed)
        assert.isTrue((error as CommitFailed).retryable)
        assert.strictEqual((error as CommitFailed).committed, "no")
        assert.include(error.message, "connection lost")
      }
      assert.deepStrictEqual(control.lookups, [3])
      control.failAppends = undefined
      const ok = yield* sequencer.submit([event(4)])
      assert.strictEqual(ok[0]!.seq, 1n)
    }))

  it.effect("gives a hung commit its budget (half of commitTimeout), then looks its events up", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ commitTimeoutMs: 1000 })
      yield* control.appendGate.close
      const fiber = yield* Effect.forkChild(Effect.flip(sequencer.submit([event(1)])))
      yield* TestClock.adjust(499)
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust(1)
      const error = yield* Fiber.join(fiber)
      assert.instanceOf(error, CommitFailed)
      assert.include(error.message, "timed out")
      // The append never ran (it waited on the gate): the lookup says so.
      assert.strictEqual((error as CommitFailed).committed, "no")
      assert.deepStrictEqual(control.lookups, [1])
    }))

  it.effect("refuses, uncommitted, what waited in the queue for its share of commitTimeout, while every committer is busy", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ commitTimeoutMs: 1000, writeConcurrency: 1 })
      yield* control.appendGate.close
      // The first commit hangs, then its lookups fail: the only committer is busy until 1000 ms.
      control.failLookups = ControlledStore.connectionLost
      const first = yield* Effect.forkChild(Effect.flip(sequencer.submit([event(1)])))
      yield* Effect.yieldNow
      yield* TestClock.adjust(100)
      const second = yield* Effect.forkChild(Effect.flip(sequencer.submit([event(2)])))
      yield* TestClock.adjust(499)
      assert.isUndefined(second.pollUnsafe())
      yield* TestClock.adjust(1)
      // The only committer is still in the first commit; the watchdog refused the second emit.
      const b = yield* Fiber.join(second)
      assert.strictEqual((b as CommitFailed).committed, "no")
      assert.isTrue((b as CommitFailed).retryable)
      assert.include(b.message, "write queue")
      assert.isUndefined(first.pollUnsafe())
      yield* TestClock.adjust(399)
      assert.isUndefined(first.pollUnsafe())
      yield* TestClock.adjust(1)
      // The outcome of the first stayed unknown until its deadline: it is answered then, as unknown.
      const a = yield* Fiber.join(first)
      assert.strictEqual((a as CommitFailed).committed, "unknown")
      assert.isAbove(control.lookups.length, 1)
      yield* control.appendGate.open
      assert.deepStrictEqual(control.appends, [1])
    }))

  it.effect("never keeps an emit waiting longer than commitTimeout end to end, whatever the store does", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ commitTimeoutMs: 1000, writeConcurrency: 2 })
      yield* control.appendGate.close
      control.failLookups = ControlledStore.connectionLost
      const answeredAfter: Array<number> = []
      const fibers: Array<Fiber.Fiber<unknown>> = []
      for (let i = 0; i < 30; i++) {
        const submittedAt = i * 70
        fibers.push(yield* Effect.forkChild(sequencer.submit([event(i)]).pipe(
          Effect.exit,
          Effect.andThen(Clock.currentTimeMillis),
          Effect.map((now) => void answeredAfter.push(now - submittedAt))
        )))
        yield* TestClock.adjust(70)
      }
      for (let t = 0; t < 100; t++) yield* TestClock.adjust(10)
      yield* Effect.forEach(fibers, Fiber.join)
      assert.strictEqual(answeredAfter.length, 30)
      for (const waited of answeredAfter) assert.isAtMost(waited, 1000)
    }))

  it.effect("resolves an unknown outcome by looking the events up: a commit that happened gets its receipt", () =>
    Effect.gen(function*() {
      const { control, handed, sequencer } = yield* setup({ commitTimeoutMs: 1000 })
      control.failAfterAppends = ControlledStore.connectionLost
      const fiber = yield* Effect.forkChild(sequencer.submit([event(1), event(2)]))
      yield* TestClock.adjust(499)
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust(1)
      const receipts = yield* Fiber.join(fiber)
      assert.deepStrictEqual(receipts.map((r) => [r.eventId, r.seq]), [[event(1).eventId, 1n], [event(2).eventId, 2n]])
      assert.deepStrictEqual(handed.flat().map((e) => e.seq), [1n, 2n])
    }))

  it.effect("retries the lookup while the database does not answer, within the caller's time", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ commitTimeoutMs: 1000 })
      control.failAfterAppends = ControlledStore.connectionLost
      control.failLookups = ControlledStore.connectionLost
      const fiber = yield* Effect.forkChild(sequencer.submit([event(1)]))
      yield* TestClock.adjust(700)
      assert.isUndefined(fiber.pollUnsafe())
      control.failLookups = undefined
      yield* TestClock.adjust(200)
      const receipts = yield* Fiber.join(fiber)
      assert.strictEqual(receipts[0]!.seq, 1n)
      assert.isAbove(control.lookups.length, 1)
    }))

  it.effect("isolates an event the database refuses for its data: it fails alone, not retryable; the others commit", () =>
    Effect.gen(function*() {
      const { control, handed, sequencer } = yield* setup({ writeBatchSize: 5000, writeQueueCapacity: 5000, writeConcurrency: 1 })
      const poisoned = event(1000, "poisoned")
      control.refuse = (e) => e.source === "poisoned" ? checkViolation : undefined
      yield* control.appendGate.close
      const good = yield* Effect.forEach(Array.from({ length: 2000 }, (_, i) => i), (i) => Effect.forkChild(sequencer.submit([event(i)])))
      const bad = yield* Effect.forkChild(Effect.flip(sequencer.submit([poisoned])))
      const more = yield* Effect.forEach([2000, 2001], (i) => Effect.forkChild(sequencer.submit([event(i)])))
      // The committer holds the first emit at the gate; every other one waits in the queue.
      while ((yield* sequencer.queued) + (control.appends[0] ?? 0) < 2003) yield* Effect.yieldNow
      yield* control.appendGate.open
      const error = yield* Fiber.join(bad)
      assert.instanceOf(error, CommitFailed)
      assert.isFalse((error as CommitFailed).retryable)
      assert.strictEqual((error as CommitFailed).committed, "no")
      assert.include(error.message, "refused this event")
      assert.include(error.message, "check constraint")
      const receipts = yield* Effect.forEach([...good, ...more], Fiber.join)
      assert.strictEqual(receipts.length, 2002)
      assert.strictEqual(handed.flat().length, 2002)
      assert.deepStrictEqual(new Set(handed.flat().map((e) => e.seq)).size, 2002)
      // The poisoned emit went in one batch with the good ones waiting after the first commit,
      // which was split in halves: a couple of appends per level.
      assert.strictEqual(control.appends[0]! + control.appends[1]!, 2003)
      assert.isAtMost(control.appends.length, 2 + 2 * Math.ceil(Math.log2(2002)))
    }))

  it.effect("fails a whole emitAll whose events the database refuses, and only it", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup()
      control.refuse = (e) => e.source === "poisoned" ? checkViolation : undefined
      yield* control.appendGate.close
      const all = yield* Effect.forkChild(Effect.flip(sequencer.submit([event(1), event(2, "poisoned"), event(3)])))
      const other = yield* Effect.forkChild(sequencer.submit([event(4)]))
      yield* Effect.yieldNow
      yield* control.appendGate.open
      assert.isFalse(((yield* Fiber.join(all)) as CommitFailed).retryable)
      assert.strictEqual((yield* Fiber.join(other))[0]!.seq, 1n)
    }))

  it.effect("does not split a batch on a failure that is not about its data", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup()
      control.failAppends = new StoreError({ operation: "append", reason: "permission denied", retryable: false, committed: "no", driver: {
        kind: "AuthorizationError", sqlState: "42501", phase: "query", detail: "permission denied for table events"
      } })
      yield* control.appendGate.close
      const fibers = yield* Effect.forEach([1, 2, 3, 4], (i) => Effect.forkChild(Effect.flip(sequencer.submit([event(i)]))))
      yield* Effect.yieldNow
      yield* control.appendGate.open
      for (const error of yield* Effect.forEach(fibers, Fiber.join)) assert.include(error.message, "permission denied")
      // Each event was sent once: no half was tried again.
      assert.strictEqual(control.appends.reduce((a, b) => a + b, 0), 4)
    }))

  it.effect("warns once per failure episode, and logs its end with counts", () =>
    Effect.gen(function*() {
      const logs: Array<{ level: string; message: unknown }> = []
      const logger = Logger.make(({ logLevel, message }) => void logs.push({ level: logLevel, message }))
      const { control, sequencer } = yield* setup({ commitTimeoutMs: 1000 }, Logger.layer([logger]))
      control.failAppends = new StoreError({ operation: "append", reason: "server shutting down", retryable: true, committed: "no" })
      for (let i = 0; i < 5; i++) yield* Effect.flip(sequencer.submit([event(i)]))
      control.failAppends = undefined
      yield* sequencer.submit([event(5)])
      yield* sequencer.submit([event(6)])
      const warnings = logs.filter((l) => l.level === "Warn")
      assert.strictEqual(warnings.length, 1)
      assert.include(JSON.stringify(warnings[0]!.message), "commits failing")
      const ended = logs.filter((l) => JSON.stringify(l.message).includes("commits succeed again"))
      assert.strictEqual(ended.length, 1)
      assert.include(JSON.stringify(ended[0]!.message), "\"failedCommits\":5")
    }))

  it.effect("applies backpressure, then fails with EmitterOverloaded after enqueueTimeout", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup({ writeQueueCapacity: 2, writeConcurrency: 1, enqueueTimeoutMs: 500 })
      yield* control.appendGate.close
      // One in the committer, two in the queue: the fourth waits for room.
      const first = yield* Effect.forkChild(sequencer.submit([event(1)]))
      yield* Effect.yieldNow
      const held = [first, ...yield* Effect.forEach([2, 3], (i) => Effect.forkChild(sequencer.submit([event(i)])))]
      yield* Effect.yieldNow
      const waiting = yield* Effect.forkChild(Effect.flip(sequencer.submit([event(4)])))
      yield* TestClock.adjust(499)
      assert.isUndefined(waiting.pollUnsafe())
      yield* TestClock.adjust(1)
      const error = yield* Fiber.join(waiting)
      assert.instanceOf(error, EmitterOverloaded)
      assert.isTrue((error as EmitterOverloaded).retryable)
      yield* control.appendGate.open
      yield* Effect.forEach(held, Fiber.join)
      assert.strictEqual(control.appends.reduce((a, b) => a + b, 0), 3)
    }))

  it.effect("an interrupted caller does not break the batch for the others", () =>
    Effect.gen(function*() {
      const { control, sequencer } = yield* setup()
      yield* control.appendGate.close
      const quitter = yield* Effect.forkChild(sequencer.submit([event(1)]))
      const stayer = yield* Effect.forkChild(sequencer.submit([event(2)]))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(quitter)
      yield* control.appendGate.open
      const result = yield* Fiber.join(stayer)
      assert.strictEqual(result[0]!.eventId, event(2).eventId)
      // The quitter's event was already queued: it is committed all the same (at-least-once).
      assert.strictEqual(control.appends.reduce((a, b) => a + b, 0), 2)
    }))

  it.effect("on shutdown commits what is queued, then refuses with EmitterClosed", () =>
    Effect.gen(function*() {
      const { control, scope, sequencer } = yield* setup({ writeConcurrency: 1 })
      yield* control.appendGate.close
      const queued = yield* Effect.forEach([1, 2, 3], (i) => Effect.forkChild(sequencer.submit([event(i)])))
      yield* Effect.yieldNow
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* Effect.yieldNow
      const refused = yield* Effect.flip(sequencer.submit([event(4)]))
      assert.instanceOf(refused, EmitterClosed)
      yield* control.appendGate.open
      yield* Fiber.join(closing)
      const results = yield* Effect.forEach(queued, Fiber.join)
      assert.deepStrictEqual(results.map((r) => r[0]!.seq).sort(), [1n, 2n, 3n])
    }))

  it.effect("at the shutdown deadline fails what is still queued instead of leaving callers waiting", () =>
    Effect.gen(function*() {
      const { control, scope, sequencer } = yield* setup({ writeConcurrency: 1, shutdownTimeoutMs: 100 })
      yield* control.appendGate.close
      const queued = yield* Effect.forEach([1, 2], (i) => Effect.forkChild(Effect.flip(sequencer.submit([event(i)]))))
      yield* Effect.yieldNow
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust(100)
      yield* Fiber.join(closing)
      const errors = yield* Effect.forEach(queued, Fiber.join)
      for (const error of errors) assert.instanceOf(error, CommitFailed)
    }))
})
