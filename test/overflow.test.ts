/**
 * No cliffs in delivery (issue 12), on the TestClock: an event the publish queue had no room for is
 * sent as soon as there is room again, never after waiting out a lease nobody holds; deletes of
 * acknowledged rows survive a store outage.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Logger, Metric, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Config from "../src/Config.ts"
import { StoreError } from "../src/Errors.ts"
import * as Event from "../src/Event.ts"
import { Liveness } from "../src/Liveness.ts"
import * as Metrics from "../src/Metrics.ts"
import { Publisher } from "../src/Publisher.ts"
import { Retransmitter } from "../src/Retransmitter.ts"
import type { StoredEvent } from "../src/Store.ts"
import { Script, ScriptedTransport } from "../src/testing/ScriptedTransport.ts"
import * as ControlledStore from "./support/ControlledStore.ts"

const firstLeaseMs = 60_000

const setup = (overrides: Partial<Config.EmitterOptions> = {}) =>
  Effect.gen(function*() {
    const control = yield* ControlledStore.make
    const scope = yield* Scope.make()
    const options: Config.EmitterOptions = { ...Config.defaults, publishLingerMs: 0, deleteLingerMs: 0, firstLeaseMs, ...overrides }
    const context = yield* Layer.buildWithScope(
      Retransmitter.layer(options).pipe(
        Layer.provideMerge(Publisher.layer(options)),
        Layer.provideMerge(ScriptedTransport.layer()),
        Layer.provideMerge(Liveness.layer),
        Layer.provide(ControlledStore.layer(control))
      ),
      scope
    )
    const commit = (n: number) =>
      Effect.gen(function*() {
        const events = Array.from({ length: n }, (_, i) => {
          const event = Event.prepare({ source: "billing", type: "paid", data: `event ${i}` }, { emitterName: "test", maxEventBytes: 1 << 20, now: 0 })
          if (!("payload" in event)) throw new Error(event.message)
          return event
        })
        const lease = options.firstLeaseMs
        const appended = yield* control.store.append(events, { now: 0, nextAttemptAt: lease })
        return events.map((e, i): StoredEvent => ({ ...e, rowId: appended[i]!.rowId, seq: appended[i]!.seq, createdAt: 0, attempts: 0, leaseUntil: lease }))
      })
    return {
      control,
      scope,
      publisher: Context.get(context, Publisher),
      script: Context.get(context, ScriptedTransport),
      commit,
      backlog: Effect.map(control.store.stats, (s) => s.backlog)
    }
  })

const settled = (outcome: string) => Effect.map(Metric.value(Metric.withAttributes(Metrics.settled, { outcome })), (s) => s.count)

describe("overflow recovers at once", () => {
  it.effect("events the full queue refused are sent within a second of room returning, not after their lease", () => {
    const warnings: Array<ReadonlyArray<unknown>> = []
    const capture = Logger.make(({ logLevel, message }) => {
      if (logLevel === "Warn") warnings.push(message as ReadonlyArray<unknown>)
    })
    return Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({ publishQueueCapacity: 4, publishBatchSize: 1, publishConcurrency: 1, claimBatchSize: 4 })
      // The first request takes 10 s: until then the one sender is busy and the queue fills.
      yield* script.push(Script.delay("10 seconds"))
      const overflowedBefore = (yield* Metric.value(Metrics.queueFull)).count
      const events = yield* commit(12)
      yield* publisher.offer(events.slice(0, 1))
      yield* script.awaitCalls(1)
      yield* publisher.offer(events.slice(1))
      const overflowed = (yield* Metric.value(Metrics.queueFull)).count - overflowedBefore
      // One in flight, four queued (perhaps one of them already taken by the dispatcher).
      assert.isAtLeast(overflowed, 6)

      // While the queue stays full nothing more is sent (the retransmitter claims only what fits).
      for (let t = 0; t < 99; t++) yield* TestClock.adjust(100)
      assert.strictEqual(yield* script.callCount, 1)
      // Room returns at 10 s; within a second every event is delivered, each once.
      for (let t = 0; t < 10; t++) yield* TestClock.adjust(100)
      const delivered = (yield* script.deliveredEvents).map((e) => e.id)
      assert.strictEqual(delivered.length, 12, `delivered ${delivered.length} by 11 s`)
      assert.strictEqual(new Set(delivered).size, 12)
      yield* publisher.flush
      assert.strictEqual(yield* backlog, 0)

      // The episode's two warnings: at its start, and at its end with the whole count.
      const episode = warnings.filter((m) => String(m[0]).startsWith("publish queue"))
      assert.strictEqual(episode.length, 2, JSON.stringify(episode))
      assert.include(String(episode[0]![0]), "publish queue full")
      assert.include(String(episode[1]![0]), "room again")
      assert.strictEqual((episode[1]![1] as { overflowed: number }).overflowed, overflowed)
    }).pipe(Effect.provide(Logger.layer([capture])))
  })

  it.effect("overflowed rows are due at once for any process: their lease is released", () =>
    Effect.gen(function*() {
      const { commit, control, publisher, script } = yield* setup({ publishQueueCapacity: 2, publishBatchSize: 1, publishConcurrency: 1, retransmit: false })
      yield* script.setDefault(Script.hang)
      const events = yield* commit(6)
      yield* publisher.offer(events.slice(0, 1))
      yield* script.awaitCalls(1)
      const before = (yield* Metric.value(Metrics.queueFull)).count
      yield* publisher.offer(events.slice(1))
      const overflowed = (yield* Metric.value(Metrics.queueFull)).count - before
      assert.isAtLeast(overflowed, 2)
      yield* TestClock.adjust(1)
      // Another process's claim takes exactly the rows this one could not queue (the last ones).
      const claimed = yield* control.store.claim({ now: 1, limit: 100, leaseBaseMs: 10_000, leaseMaxMs: 60_000 })
      assert.deepStrictEqual(claimed.map((r) => r.eventId).sort(), events.slice(6 - overflowed).map((e) => e.eventId).sort())
    }))
})

describe("acks survive a database blip", () => {
  const outage = new StoreError({ operation: "delete", reason: "connection lost", retryable: true })

  it.effect("deletes of acknowledged rows are retried across a 15 s store outage; nothing is sent twice", () =>
    Effect.gen(function*() {
      const { backlog, commit, control, publisher, script } = yield* setup({ retransmit: false })
      control.failDeletes = outage
      yield* publisher.offer(yield* commit(3))
      const flushing = yield* Effect.forkChild(publisher.flush)
      for (let t = 0; t < 150; t++) yield* TestClock.adjust(100)
      assert.isUndefined(flushing.pollUnsafe(), "flush waits for the deletes")
      assert.strictEqual(yield* backlog, 3)
      assert.isAbove(control.deletes.length, 5, "retried")
      control.failDeletes = undefined
      yield* TestClock.adjust(3_000) // past the longest retry delay: 2 s capped, then ±20 % jitter
      yield* Fiber.join(flushing)
      assert.strictEqual(yield* backlog, 0)
      assert.strictEqual(yield* script.callCount, 1)
    }))

  it.effect("a row whose delete is slow comes due again, and the retransmitter does not send it a second time", () =>
    Effect.gen(function*() {
      const { backlog, commit, control, publisher, script } = yield* setup({ firstLeaseMs: 1_000, requestTimeoutMs: 100, leaseBaseMs: 60_000, leaseMaxMs: 120_000, retransmitIntervalMs: 100 })
      control.failDeletes = outage
      yield* publisher.offer(yield* commit(3))
      for (let t = 0; t < 50; t++) yield* TestClock.adjust(100)
      assert.isAbove(control.claims, 0, "the rows came due and were claimed meanwhile")
      assert.strictEqual(yield* script.callCount, 1, "sent once")
      control.failDeletes = undefined
      yield* TestClock.adjust(3_000)
      assert.strictEqual(yield* backlog, 0)
      assert.strictEqual(yield* script.callCount, 1)
    }))

  it.effect("memory stays bounded while deletes fail; at shutdown every acknowledged row stays, counted, and the layer closes in time", () =>
    Effect.gen(function*() {
      // Room for 4 acks: beyond them the sender waits (and with it, delivery).
      const { backlog, commit, control, publisher, scope, script } = yield* setup({
        retransmit: false, shutdownTimeoutMs: 1_000, deleteBatchSize: 1, publishBatchSize: 1, publishConcurrency: 1
      })
      control.failDeletes = outage
      const before = yield* settled("Undeleted")
      yield* publisher.offer(yield* commit(12))
      yield* TestClock.adjust(5_000)
      const delivered = (yield* script.deliveredEvents).length
      assert.isAtLeast(delivered, 5)
      assert.isBelow(delivered, 12, "delivery stops while the acks cannot be deleted")
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust(1_000)
      yield* Fiber.join(closing)
      assert.strictEqual(yield* backlog, 12)
      assert.strictEqual((yield* settled("Undeleted")) - before, delivered)
    }))
})
