/**
 * Load generators against an Emitter: closed loop (N emitters, each emits again when its receipt
 * arrives) and open loop (emits started on a fixed schedule regardless of completions).
 */
import { Effect, Exit, FiberSet } from "effect"
import type { EmitReceipt, Emitter } from "../src/Emitter.ts"
import {
  benchInput,
  bounded,
  type CpuUse,
  cpuWindow,
  type EventLoopDelay,
  eventLoopDelayWindow,
  type LatencySummary,
  Reservoir,
  since,
  summarize
} from "./common.ts"

type EmitterShape = (typeof Emitter)["Service"]

export interface ClosedLoopResult {
  readonly concurrency: number
  readonly events: number
  readonly errors: number
  readonly firstError: string | undefined
  readonly seconds: number
  readonly eventsPerSecond: number
  /** Emit call to receipt. */
  readonly latency: LatencySummary
  readonly cpu: CpuUse
}

export interface ClosedLoopOptions {
  readonly concurrency: number
  /** Stop starting emits after this long. */
  readonly seconds: number
  /** Stop starting emits after this many. */
  readonly maxEvents: number
  /** Called with every receipt, when its emit started and when it arrived (performance.now()). */
  readonly onReceipt?: (receipt: EmitReceipt, startedAt: number, at: number) => void
}

/** `concurrency` emitters, each awaiting its receipt before the next emit; bounded in count and time. */
export const closedLoop = (emitter: EmitterShape, options: ClosedLoopOptions) =>
  Effect.gen(function*() {
    let done = 0
    let errors = 0
    let claimed = 0
    let firstError: string | undefined
    const latency = new Reservoir(200_000)
    const cpu = cpuWindow()
    const start = performance.now()
    const deadline = start + options.seconds * 1000
    const worker = Effect.gen(function*() {
      while (claimed < options.maxEvents && performance.now() < deadline) {
        claimed++
        const s = performance.now()
        const exit = yield* Effect.exit(emitter.emit(benchInput))
        const at = performance.now()
        if (Exit.isSuccess(exit)) {
          done++
          latency.add(at - s)
          options.onReceipt?.(exit.value, s, at)
        } else {
          errors++
          firstError ??= String(exit.cause)
        }
      }
    })
    yield* bounded(
      `closed loop at ${options.concurrency}`,
      options.seconds * 1000 + 60_000,
      Effect.forEach(Array.from({ length: options.concurrency }), () => worker, { concurrency: "unbounded", discard: true })
    )
    const elapsed = since(start)
    return {
      concurrency: options.concurrency,
      events: done,
      errors,
      firstError,
      seconds: elapsed / 1000,
      eventsPerSecond: done / (elapsed / 1000),
      latency: summarize(latency.values),
      cpu: cpu.end()
    } satisfies ClosedLoopResult
  })

export interface OpenLoopResult {
  readonly offeredPerSecond: number
  /** Emits actually started per second (the generator shares the event loop with the emitter). */
  readonly startedPerSecond: number
  readonly events: number
  readonly errors: number
  readonly firstError: string | undefined
  /** Emit call to receipt. */
  readonly latency: LatencySummary
  /** Scheduled start to receipt (includes the generator's own lateness: no coordinated omission). */
  readonly latencyFromSchedule: LatencySummary
  /** How late the generator started emits, worst case, ms. */
  readonly maxStartLagMs: number
  /** Event-loop delay while generating (what blocks every fiber of this process at once), ms. */
  readonly eventLoopDelay: EventLoopDelay
  readonly cpu: CpuUse
}

/**
 * Starts `perSecond` emits per second for `seconds`, on a 1 ms tick, catching up whatever the
 * timer missed, each emit in its own fiber; then waits (bounded) for every receipt.
 */
export const openLoop = (emitter: EmitterShape, perSecond: number, seconds: number) =>
  Effect.scoped(Effect.gen(function*() {
    const total = Math.round(perSecond * seconds)
    const latency = new Float64Array(total)
    const fromSchedule = new Float64Array(total)
    let completed = 0
    let errors = 0
    let firstError: string | undefined
    let maxLag = 0
    const fibers = yield* FiberSet.make<void>()
    const intervalMs = 1000 / perSecond
    const loopDelay = eventLoopDelayWindow()
    const cpu = cpuWindow()
    const start = performance.now()
    let started = 0
    while (started < total) {
      const now = performance.now()
      const due = Math.min(total, Math.floor((now - start) / intervalMs) + 1)
      while (started < due) {
        const i = started++
        const scheduled = start + i * intervalMs
        const s = performance.now()
        maxLag = Math.max(maxLag, s - scheduled)
        yield* FiberSet.run(
          fibers,
          Effect.exit(emitter.emit(benchInput)).pipe(Effect.map((exit) => {
            const at = performance.now()
            if (Exit.isSuccess(exit)) {
              latency[completed] = at - s
              fromSchedule[completed] = at - scheduled
              completed++
            } else {
              errors++
              firstError ??= String(exit.cause)
            }
          }))
        )
      }
      yield* Effect.sleep(1)
    }
    const generated = since(start)
    const eventLoopDelay = loopDelay.end()
    yield* bounded("open loop receipts", 60_000, FiberSet.awaitEmpty(fibers))
    const used = cpu.end()
    return {
      offeredPerSecond: perSecond,
      startedPerSecond: total / (generated / 1000),
      events: completed,
      errors,
      firstError,
      latency: summarize(latency.subarray(0, completed)),
      latencyFromSchedule: summarize(fromSchedule.subarray(0, completed)),
      maxStartLagMs: maxLag,
      eventLoopDelay,
      cpu: used
    } satisfies OpenLoopResult
  }))
