/**
 * What the senders share: the push-back gate (one reply's push-back holds every request to the
 * endpoint), the retry throttle, the attempt count sent with retries, and the failure episodes of
 * the log. TestClock throughout.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Logger } from "effect"
import { TestClock } from "effect/testing"
import * as RetryThrottle from "../src/publisher/retryThrottle.ts"
import { Script } from "../src/testing/ScriptedTransport.ts"
import { TransportError } from "../src/Transport.ts"
import { setup } from "./support/publisher.ts"

const captureLogs = () => {
  const logs: Array<{ level: string; text: string }> = []
  const logger = Logger.make(({ logLevel, message }) => void logs.push({ level: logLevel, text: JSON.stringify(message) }))
  return { logs, layer: Logger.layer([logger]) }
}

describe("push-back is server-wide", () => {
  it.effect("with 4 senders and a 3 s push-back on one reply, no request of any sender starts within those 3 s", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({ publishConcurrency: 4, publishBatchSize: 1, retryBaseDelayMs: 100 })
      // The first four requests are answered at 1 s, one of them with a 3 s push-back.
      yield* script.push(Script.delay(1_000, Script.unavailable(3_000)), Script.delay(1_000), Script.delay(1_000), Script.delay(1_000))
      yield* publisher.offer(yield* commit(12))
      yield* script.awaitCalls(4)
      assert.strictEqual(yield* script.maxInFlight, 4)
      const flushing = yield* Effect.forkChild(publisher.flush)
      yield* TestClock.adjust(1_000)
      // Three senders are free and the queue holds 8 events, yet nothing starts until 4 s.
      yield* TestClock.adjust(2_999)
      assert.strictEqual(yield* script.callCount, 4)
      yield* TestClock.adjust(1)
      yield* Fiber.join(flushing)
      const calls = yield* script.calls
      assert.strictEqual(calls.length, 13) // 12 events, one retried
      for (const call of calls.slice(4)) assert.strictEqual(call.at, 4_000)
      assert.strictEqual(yield* script.maxInFlight, 4)
      assert.strictEqual(yield* backlog, 0)
    }))

  it.effect("the longest push-back wins: a shorter one later does not open the gate early", () =>
    Effect.gen(function*() {
      const { commit, publisher, script } = yield* setup({ publishConcurrency: 2, publishBatchSize: 1, retryBaseDelayMs: 100 })
      // Both requests start at 0: one answered at 1 s with 5 s of push-back, one at 2 s with 1 s.
      yield* script.push(Script.delay(1_000, Script.unavailable(5_000)), Script.delay(2_000, Script.unavailable(1_000)))
      yield* publisher.offer(yield* commit(4))
      yield* script.awaitCalls(2)
      const flushing = yield* Effect.forkChild(publisher.flush)
      yield* TestClock.adjust(5_999)
      assert.strictEqual(yield* script.callCount, 2)
      yield* TestClock.adjust(1)
      yield* Fiber.join(flushing)
      const later = (yield* script.calls).slice(2)
      assert.strictEqual(later.length, 4)
      for (const call of later) assert.strictEqual(call.at, 6_000)
    }))
})

describe("retry throttle", () => {
  const options = RetryThrottle.defaultRetryThrottle
  it("is gRPC's token bucket: failures take 1, successes give back tokenRatio, retries above half", () => {
    const full = RetryThrottle.full(options)
    const table: Array<{ steps: string; tokens: number; allows: boolean }> = [
      { steps: "", tokens: 10_000, allows: true },
      { steps: "ffff", tokens: 6_000, allows: true },
      { steps: "fffff", tokens: 5_000, allows: false },
      { steps: "fffffs", tokens: 5_100, allows: true },
      { steps: "fffffsf", tokens: 4_100, allows: false },
      { steps: "ffffffffffffff", tokens: 0, allows: false },
      { steps: "ffffffffffffffs", tokens: 100, allows: false },
      { steps: "sss", tokens: 10_000, allows: true },
      { steps: "f" + "s".repeat(10), tokens: 10_000, allows: true }
    ]
    for (const { allows, steps, tokens } of table) {
      let t = full
      for (const step of steps) t = step === "f" ? RetryThrottle.afterFailure(t) : RetryThrottle.afterSuccess(t, options)
      assert.strictEqual(t, tokens, steps)
      assert.strictEqual(RetryThrottle.allowsRetry(t, options), allows, steps)
    }
  })

  it.effect("under a sustained failure retries stop (rows left to the retransmitter), and resume after successes", () =>
    Effect.gen(function*() {
      const { backlog, commit, publisher, script } = yield* setup({
        publishBatchSize: 1, publishConcurrency: 1, retryBaseDelayMs: 100, retryMaxDelayMs: 100, retryBudgetMs: 60_000
      })
      yield* script.setDefault(Script.unavailable())
      yield* publisher.offer(yield* commit(1))
      let flushing = yield* Effect.forkChild(publisher.flush)
      for (let i = 0; i < 20; i++) yield* TestClock.adjust(100)
      yield* Fiber.join(flushing)
      // 10 tokens: the 5th failure leaves 5, not more than half: no 6th attempt, although the budget allows 60 s.
      assert.strictEqual(yield* script.callCount, 5)
      assert.strictEqual(yield* backlog, 1)
      // Further failed batches get no retry at all while the bucket is low.
      yield* publisher.offer(yield* commit(2))
      flushing = yield* Effect.forkChild(publisher.flush)
      yield* TestClock.adjust(1_000)
      yield* Fiber.join(flushing)
      assert.strictEqual(yield* script.callCount, 7)
      // 31 successes give back 3.1 tokens (3 → 6.1): the next failure leaves 5.1, more than half: it is retried.
      yield* script.setDefault(Script.deliver)
      yield* publisher.offer(yield* commit(31))
      yield* publisher.flush
      yield* script.push(Script.unavailable())
      yield* publisher.offer(yield* commit(1))
      flushing = yield* Effect.forkChild(publisher.flush)
      yield* TestClock.adjust(1_000)
      yield* Fiber.join(flushing)
      const calls = yield* script.calls
      assert.strictEqual(calls.length, 7 + 31 + 2)
      assert.strictEqual(calls[calls.length - 1]!.outcome._tag, "Answered")
    }))
})

describe("failure episodes in the log", () => {
  it.effect("one warning when rows are first postponed, naming the cause; one at the end, with counts", () =>
    Effect.gen(function*() {
      const { layer, logs } = captureLogs()
      const { commit, publisher, script } = yield* setup({
        publishBatchSize: 1, publishConcurrency: 1, retryBaseDelayMs: 100, retryMaxDelayMs: 100, retryBudgetMs: 1_000
      }, layer)
      yield* script.setDefault(Script.fail(new TransportError({ kind: "retryable", code: "network", reason: "connect ECONNREFUSED 127.0.0.1:9" })))
      yield* publisher.offer(yield* commit(3))
      let flushing = yield* Effect.forkChild(publisher.flush)
      for (let i = 0; i < 30; i++) yield* TestClock.adjust(100)
      yield* Fiber.join(flushing)
      const failed = yield* script.callCount
      let warnings = logs.filter((l) => l.level === "Warn")
      assert.strictEqual(warnings.length, 1, JSON.stringify(warnings))
      assert.include(warnings[0]!.text, "delivery postponed")
      assert.include(warnings[0]!.text, "last error: connect ECONNREFUSED 127.0.0.1:9")
      yield* script.setDefault(Script.deliver)
      yield* publisher.offer(yield* commit(2))
      flushing = yield* Effect.forkChild(publisher.flush)
      yield* TestClock.adjust(100)
      yield* Fiber.join(flushing)
      warnings = logs.filter((l) => l.level === "Warn")
      assert.strictEqual(warnings.length, 2, JSON.stringify(warnings))
      assert.include(warnings[1]!.text, "delivery succeeds again")
      assert.include(warnings[1]!.text, `"failedRequests":${failed}`)
      assert.include(warnings[1]!.text, `"postponedRows":3`)
      assert.include(warnings[1]!.text, `"postponements":3`)
    }))
})
