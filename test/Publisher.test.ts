import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Metric, Schedule, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Metrics from "../src/Metrics.ts"
import { Script } from "../src/testing/ScriptedTransport.ts"
import { TransportError } from "../src/Transport.ts"
import { setup } from "./support/publisher.ts"

describe("Publisher", () => {
  it.effect("delivers every event once, stamps its seqnum, and deletes the rows in coalesced batches", () =>
    Effect.gen(function*() {
      const { backlog, commit, control, publisher, script } = yield* setup({ publishBatchSize: 10 })
      const events = yield* commit(35)
      yield* publisher.offer(events)
      yield* publisher.flush
      const sent = yield* script.sentEvents
      assert.strictEqual(sent.length, 35)
      assert.deepStrictEqual(sent.map((e) => e.id).sort(), events.map((e) => e.eventId).sort())
      for (const e of sent) {
        const original = events.find((x) => x.eventId === e.id)!
        assert.strictEqual(e.seqnum, original.seq.toString())
      }
      assert.deepStrictEqual((yield* script.calls).map((c) => c.payloads.length).sort(), [10, 10, 10, 5])
      assert.strictEqual(yield* backlog, 0)
      assert.isAtMost(control.deletes.length, 4)
    }))

  it.effect("splits batches so every request stays under maxRequestBytes", () =>
    Effect.gen(function*() {
      const { commit, publisher, script } = yield* setup({ publishBatchSize: 100, maxRequestBytes: 2_000 })
      yield* publisher.offer(yield* commit(20, 300))
      yield* publisher.flush
      const calls = yield* script.calls
      assert.isAbove(calls.length, 3)
      for (const call of calls) {
        const bytes = call.payloads.reduce((n, p) => n + p.length + 6, 0)
        assert.isBelow(bytes, 2_000)
      }
      assert.strictEqual((yield* script.sentEvents).length, 20)
    }))

  it.effect("lingers to fill a batch", () =>
    Effect.gen(function*() {
      const { commit, publisher, script } = yield* setup({ publishLingerMs: 20, publishBatchSize: 10 })
      const events = yield* commit(2)
      yield* publisher.offer([events[0]!])
      yield* TestClock.adjust(10)
      yield* publisher.offer([events[1]!])
      assert.strictEqual(yield* script.callCount, 0)
      yield* TestClock.adjust(10)
      yield* publisher.flush
      assert.deepStrictEqual((yield* script.calls).map((c) => c.payloads.length), [2])
    }))

  it.effect("dead-letters events the server rejects permanently and delivers the rest", () =>
    Effect.gen(function*() {
      const { backlog, commit, control, publisher, script } = yield* setup()
      yield* script.push(Script.reject([1, 3], "SCHEMA_MISSING", "no schema for t1"))
      const events = yield* commit(5)
      yield* publisher.offer(events)
      yield* publisher.flush
      assert.strictEqual(yield* backlog, 0)
      const dead = yield* control.store.listDeadLetters({})
      assert.deepStrictEqual(dead.map((d) => d.eventId).sort(), [events[1]!.eventId, events[3]!.eventId].sort())
      assert.deepStrictEqual(dead.map((d) => d.code), ["SCHEMA_MISSING", "SCHEMA_MISSING"])
      assert.strictEqual(dead[0]!.reason, "no schema for t1")
      assert.strictEqual(yield* script.callCount, 1)
    }))

  it.effect("retries only the events that failed with a retryable per-event code", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({ retryBaseDelayMs: 100 })
      yield* script.push(Script.reject([2], "UNKNOWN", "try again"))
      yield* publisher.offer(yield* commit(4))
      yield* Effect.yieldNow
      yield* TestClock.adjust(200)
      yield* publisher.flush
      const calls = yield* script.calls
      assert.deepStrictEqual(calls.map((c) => c.payloads.length), [4, 1])
      assert.strictEqual(calls[1]!.events[0]!.id, calls[0]!.events[2]!.id)
      assert.strictEqual(yield* backlog, 0)
    }))

  it.effect("never retries before the server's push-back, even above the backoff cap", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({ retryBaseDelayMs: 100, retryMaxDelayMs: 1000 })
      yield* script.push(Script.unavailable(3_000))
      yield* publisher.offer(yield* commit(3))
      yield* script.awaitCalls(1)
      yield* TestClock.adjust(2_999)
      assert.strictEqual(yield* script.callCount, 1)
      yield* TestClock.adjust(1)
      yield* publisher.flush
      const calls = yield* script.calls
      assert.strictEqual(calls.length, 2)
      assert.strictEqual(calls[1]!.at, 3_000)
      assert.strictEqual(yield* backlog, 0)
    }))

  it.effect("backs off exponentially between retries", () =>
    Effect.gen(function*() {
      const { commit, publisher, script } = yield* setup({ retryBaseDelayMs: 100, retryMaxDelayMs: 10_000 })
      yield* script.push(Script.unavailable(), Script.unavailable(), Script.unavailable())
      yield* publisher.offer(yield* commit(1))
      const flushing = yield* Effect.forkChild(publisher.flush)
      for (let i = 0; i < 20; i++) yield* TestClock.adjust(100)
      yield* Fiber.join(flushing)
      const at = (yield* script.calls).map((c) => c.at)
      assert.strictEqual(at.length, 4)
      const gaps = at.slice(1).map((t, i) => t - at[i]!)
      // 100, 200, 400 ms, each ±20 % (rounded up to the 100 ms steps of the clock)
      assert.isTrue(gaps[0]! >= 80 && gaps[0]! <= 200, `gaps ${gaps}`)
      assert.isTrue(gaps[1]! >= 160 && gaps[1]! <= 300, `gaps ${gaps}`)
      assert.isTrue(gaps[2]! >= 320 && gaps[2]! <= 500, `gaps ${gaps}`)
    }))

  it.effect("takes its retry policy from the retrySchedule option", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({
        retrySchedule: Schedule.spaced("7 seconds").pipe(Schedule.upTo({ times: 2 }))
      })
      yield* script.setDefault(Script.unavailable())
      yield* publisher.offer(yield* commit(2))
      const flushing = yield* Effect.forkChild(publisher.flush)
      for (let i = 0; i < 30; i++) yield* TestClock.adjust(1_000)
      yield* Fiber.join(flushing)
      assert.deepStrictEqual((yield* script.calls).map((c) => c.at), [0, 7_000, 14_000])
      assert.strictEqual(yield* backlog, 2)
    }))

  it.effect("gives up at the retry budget and leaves the rows to the retransmitter", () =>
    Effect.gen(function*() {
      // A bucket the throttle never empties here: the budget, not the throttle, ends the retries.
      const { backlog, commit, publisher, script } = yield* setup({
        retryBaseDelayMs: 100, retryMaxDelayMs: 1_000, retryBudgetMs: 5_000, retryThrottle: { maxTokens: 1_000, tokenRatio: 0.1 }
      })
      yield* script.setDefault(Script.unavailable())
      yield* publisher.offer(yield* commit(3))
      const flushing = yield* Effect.forkChild(publisher.flush)
      for (let i = 0; i < 60; i++) yield* TestClock.adjust(100)
      yield* Fiber.join(flushing)
      const calls = yield* script.calls
      assert.isAbove(calls.length, 5)
      assert.isAtMost(calls[calls.length - 1]!.at, 5_000)
      assert.strictEqual(yield* backlog, 3)
      const count = calls.length
      yield* TestClock.adjust(10_000)
      assert.strictEqual(yield* script.callCount, count)
    }))

  it.effect("a server that asks not to retry gets no retry: the rows are left to the retransmitter at once", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup()
      yield* script.setDefault(Script.fail(new TransportError({ kind: "retryable", code: "unavailable", reason: "draining", doNotRetry: true })))
      yield* publisher.offer(yield* commit(3))
      yield* publisher.flush
      assert.strictEqual(yield* script.callCount, 1)
      assert.strictEqual(yield* backlog, 3)
      yield* TestClock.adjust(60_000)
      assert.strictEqual(yield* script.callCount, 1)
    }))

  it.effect("isolates the event a whole-request permanent failure is about, instead of dead-lettering the batch", () =>
    Effect.gen(function*() {
      const { backlog, commit, control, publisher, script } = yield* setup()
      const events = yield* commit(8)
      const poison = events[5]!.eventId
      yield* script.setDefault(Script.respond((call) =>
        call.events.some((e) => e.id === poison)
          ? Effect.fail(new TransportError({ kind: "permanent", code: "invalid_argument", reason: "bad event" }))
          : Effect.succeed(call.payloads.map(() => ({ _tag: "Delivered" as const })))
      ))
      yield* publisher.offer(events)
      yield* publisher.flush
      assert.strictEqual(yield* backlog, 0)
      const dead = yield* control.store.listDeadLetters({})
      assert.deepStrictEqual(dead.map((d) => d.eventId), [poison])
      assert.strictEqual(dead[0]!.code, "invalid_argument")
      assert.strictEqual((yield* script.deliveredEvents).length, 7)
    }))

  it.effect("keeps the rows on a configuration fault and reports it", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup()
      yield* script.push(Script.config("unauthenticated"))
      yield* publisher.offer(yield* commit(2))
      yield* publisher.flush
      assert.strictEqual(yield* backlog, 2)
      assert.strictEqual(yield* script.callCount, 1)
      const state = yield* publisher.state
      assert.isTrue(state.transport.misconfigured)
      assert.include(state.transport.lastError, "unauthenticated")
    }))

  it.effect("a hung request does not hold up the other senders", () =>
    Effect.gen(function*() {
      const { commit, publisher, script } = yield* setup({ publishBatchSize: 2, publishConcurrency: 2 })
      yield* script.push(Script.hang)
      yield* publisher.offer(yield* commit(6))
      yield* script.awaitCalls(3)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow
      const delivered = yield* script.deliveredEvents
      assert.strictEqual(delivered.length, 4)
      assert.strictEqual(yield* script.inFlight, 1)
    }))

  it.effect("leaves events to the retransmitter when the queue is full, counting them", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({ publishQueueCapacity: 4, publishBatchSize: 1, publishConcurrency: 1 })
      yield* script.push(Script.hang)
      const before = (yield* Metric.value(Metrics.queueFull)).count
      const events = yield* commit(10)
      yield* publisher.offer(events.slice(0, 1))
      yield* script.awaitCalls(1)
      // One in flight (hung), one waiting for a sender, four queued: four do not fit.
      yield* publisher.offer(events.slice(1))
      const left = (yield* Metric.value(Metrics.queueFull)).count - before
      assert.isAtLeast(left, 4)
      assert.strictEqual(yield* backlog, 10)
    }))

  it.effect("starts no request that a row's lease could not cover, and leaves such rows to the retransmitter", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({ requestTimeoutMs: 1_000, retryBaseDelayMs: 500, retryMaxDelayMs: 500 })
      yield* script.push(Script.unavailable())
      const [short, long] = yield* commit(2)
      // A 1 s request needs 1 250 ms of lease: the short one has it now, not at the retry (≥ 400 ms later).
      yield* publisher.offer([{ ...short!, leaseUntil: 1_600 }, long!])
      yield* script.awaitCalls(1)
      const flushing = yield* Effect.forkChild(publisher.flush)
      yield* TestClock.adjust(1_000)
      yield* Fiber.join(flushing)
      const calls = yield* script.calls
      assert.deepStrictEqual(calls.map((c) => c.events.map((e) => e.id)), [[short!.eventId, long!.eventId], [long!.eventId]])
      assert.strictEqual(yield* backlog, 1)
    }))

  it.effect("at shutdown delivers what it accepted, then stops", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, scope, script } = yield* setup({ publishLingerMs: 50 })
      yield* publisher.offer(yield* commit(5))
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust(50)
      yield* Fiber.join(closing)
      assert.strictEqual(yield* backlog, 0)
      assert.strictEqual((yield* script.deliveredEvents).length, 5)
    }))

  it.effect("at the shutdown deadline interrupts requests in flight; the rows stay", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, scope, script } = yield* setup({ shutdownTimeoutMs: 1_000 })
      yield* script.setDefault(Script.hang)
      yield* publisher.offer(yield* commit(3))
      yield* script.awaitCalls(1)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust(999)
      assert.isUndefined(closing.pollUnsafe())
      yield* TestClock.adjust(1)
      yield* Fiber.join(closing)
      const calls = yield* script.calls
      assert.strictEqual(calls.length, 1)
      assert.strictEqual(calls[0]!.outcome._tag, "Interrupted")
      assert.strictEqual(yield* backlog, 3)
      yield* TestClock.adjust(60_000)
      assert.strictEqual(yield* script.callCount, 1)
    }))
})
