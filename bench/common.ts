/**
 * Shared pieces of the benchmark: the database, unique table prefixes and their cleanup, the
 * benchmark event, percentiles, a memory sampler, and the report/JSON plumbing.
 */
import { readdirSync, readFileSync } from "node:fs"
import * as os from "node:os"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted, References } from "effect"
import { SqlClient } from "effect/sql"
import type { EmitterOptionsInput } from "../src/Config.ts"
import * as Event from "../src/Event.ts"
import type { NewEvent } from "../src/Store.ts"

export const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

/** Size of `data` in every benchmark event. */
export const dataBytes = 256

const runId = `bench_${process.pid}_${Date.now().toString(36)}`
/** A table prefix no other run uses. */
export const freshPrefix = (scenario: string) => `${runId}_${scenario}`

/** One short-lived connection for setup, polling and cleanup (never the code under test's pool). */
export const adminClient = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1, applicationName: "durable-emitter-bench" })

/** Drops every table of a prefix (emitter tables and the baseline table). */
export const dropTables = (prefix: string) =>
  SqlClient.SqlClient.use((sql) =>
    sql.unsafe(
      `DROP TABLE IF EXISTS ${prefix}_events, ${prefix}_sequences, ${prefix}_dead_letters, ${prefix}_pending, ${prefix}_migrations, ${prefix}_rotation, ${prefix}_baseline, ${prefix}_sweep, ${prefix}_sweep_template`
    ).unprepared
  ).pipe(Effect.provide(adminClient), Effect.orDie)

/** Runs `effect` and always drops the prefix's tables afterwards. */
export const withTables = <A, E>(prefix: string, effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
  effect.pipe(Effect.ensuring(dropTables(prefix)))

/** The 256-byte body every benchmark event carries (deterministic, incompressible-looking). */
export const data: Uint8Array = (() => {
  const bytes = new Uint8Array(dataBytes)
  let x = 0x12345678
  for (let i = 0; i < bytes.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    bytes[i] = x & 0xff
  }
  return bytes
})()

/** What the benchmark emits: one source and type (so every commit touches the same sequence row). */
export const benchInput: Event.EmitInput = { source: "bench", type: "bench.event", data }

/** An event as `Emitter.emit` would store it (fresh id every call). */
export const prepared = (now: number): NewEvent => {
  const event = Event.prepare(benchInput, { emitterName: "durable-emitter-bench", maxEventBytes: 1024 * 1024, now })
  if (!("payload" in event)) throw new Error(`cannot prepare the benchmark event: ${event.message}`)
  return event
}

/** Emitter logs below Warn are noise in a benchmark report. */
export const quietLogs = Layer.succeed(References.MinimumLogLevel, "Warn")

// ---- numbers ------------------------------------------------------------------------------------

export const percentile = (sorted: Float64Array | ReadonlyArray<number>, p: number): number => {
  if (sorted.length === 0) return NaN
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[index]!
}

export interface LatencySummary {
  readonly count: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  readonly mean: number
}

export const summarize = (values: Float64Array | ReadonlyArray<number>): LatencySummary => {
  const sorted = Float64Array.from(values).sort()
  let sum = 0
  for (const v of sorted) sum += v
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: sorted.length === 0 ? NaN : sorted[sorted.length - 1]!,
    mean: sorted.length === 0 ? NaN : sum / sorted.length
  }
}

export const round = (n: number, digits = 2) => Number.isFinite(n) ? Number(n.toFixed(digits)) : n
export const int = (n: number) => Math.round(n).toLocaleString("en-US")
export const ms = (n: number) => `${round(n, 2)} ms`
export const mb = (bytes: number) => round(bytes / (1024 * 1024), 1)

export const latencyLine = (label: string, s: LatencySummary) =>
  `${label}: p50 ${ms(s.p50)}, p90 ${ms(s.p90)}, p99 ${ms(s.p99)}, p99.9 ${ms(s.p999)}, max ${ms(s.max)} (n=${int(s.count)})`

/** A bounded reservoir of samples: keeps every value until full, then a uniform sample. */
export class Reservoir {
  readonly values: Array<number> = []
  readonly capacity: number
  #seen = 0
  constructor(capacity: number) {
    this.capacity = capacity
  }
  add(value: number) {
    this.#seen++
    if (this.values.length < this.capacity) this.values.push(value)
    else {
      const j = Math.floor(Math.random() * this.#seen)
      if (j < this.capacity) this.values[j] = value
    }
  }
  get seen() {
    return this.#seen
  }
  clear() {
    this.values.length = 0
    this.#seen = 0
  }
}

// ---- memory -------------------------------------------------------------------------------------

export interface MemoryPeak {
  readonly peakRssMb: number
  readonly peakHeapUsedMb: number
  readonly startRssMb: number
  readonly startHeapUsedMb: number
  readonly endRssMb: number
  readonly endHeapUsedMb: number
}

/** Samples this process's memory every `intervalMs` until stopped. */
export const sampleMemory = (intervalMs = 100) => {
  const start = process.memoryUsage()
  let peakRss = start.rss
  let peakHeap = start.heapUsed
  const sample = () => {
    const m = process.memoryUsage()
    if (m.rss > peakRss) peakRss = m.rss
    if (m.heapUsed > peakHeap) peakHeap = m.heapUsed
  }
  const timer = setInterval(sample, intervalMs)
  timer.unref()
  return {
    stop: (): MemoryPeak => {
      clearInterval(timer)
      sample()
      const end = process.memoryUsage()
      return {
        peakRssMb: mb(peakRss),
        peakHeapUsedMb: mb(peakHeap),
        startRssMb: mb(start.rss),
        startHeapUsedMb: mb(start.heapUsed),
        endRssMb: mb(end.rss),
        endHeapUsedMb: mb(end.heapUsed)
      }
    }
  }
}

/** Peak RSS of another process (Linux VmHWM), MB; NaN when unknown. */
export const peakRssOf = (pid: number): number => {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmHWM:"))
    return line === undefined ? NaN : mb(Number(line.split(/\s+/)[1]) * 1024)
  } catch {
    return NaN
  }
}

// ---- CPU ----------------------------------------------------------------------------------------

/** Busy and total jiffies of the whole machine (Linux /proc/stat; zeros elsewhere). */
const machineTicks = () => {
  try {
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number)
    const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0)
    const total = cpu.reduce((a, b) => a + b, 0)
    return { busy: total - idle, total, steal: cpu[7] ?? 0 }
  } catch {
    return { busy: 0, total: 0, steal: 0 }
  }
}

/** CPU jiffies (user + system) of one process (or one thread: `task/<tid>`), 0 when it is gone or not on Linux. */
const processTicks = (pid: number | string) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return 0
  }
}

/** Every PostgreSQL server process on this machine (the server and its backends). */
const postgresPids = () => {
  try {
    return readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "postgres"
      } catch {
        return false
      }
    })
  } catch {
    return []
  }
}

/**
 * This process's JavaScript thread (its main thread's id is the process id). The process's own
 * figure also counts V8's GC helper threads; the JS thread is the one every fiber shares.
 */
const jsThreadTicks = () => processTicks(`${process.pid}/task/${process.pid}`)

/** Jiffies per second of /proc (USER_HZ; 100 on Linux). */
const userHz = 100

export interface CpuUse {
  /** This process's CPU time over the window, in % of one core. */
  readonly processPct: number
  /** Of it, its JavaScript thread's (the rest is V8's helper threads: GC), in % of one core. */
  readonly jsThreadPct: number
  /**
   * The share of the window the event loop was not waiting for I/O (Node's event-loop
   * utilization): near 100 with the JS thread's CPU well below it, the thread was runnable but
   * off the CPU (preempted by other processes, e.g. the PostgreSQL backend its write woke).
   */
  readonly eventLoopBusyPct: number
  /** The whole machine's busy time (this process, PostgreSQL, the ingest server…), in % of all cores. */
  readonly machinePct: number
  /**
   * Of the machine's time, the share the hypervisor gave to other guests while this one had work
   * (steal), in % of all cores: the machine was that much slower than its cores say.
   */
  readonly stealPct: number
  /** PostgreSQL's processes, in % of one core. */
  readonly postgresPct: number
  /** Other processes watched (e.g. the ingest server), in % of one core. */
  readonly othersPct: Readonly<Record<string, number>>
}

/** Event-loop delay (what blocks every fiber of this process at once), ms. */
export interface EventLoopDelay {
  readonly p50: number
  readonly p99: number
  readonly max: number
}

/** Starts watching the event-loop delay; `end` stops and answers it. */
export const eventLoopDelayWindow = () => {
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  histogram.enable()
  return {
    end: (): EventLoopDelay => {
      histogram.disable()
      return { p50: histogram.percentile(50) / 1e6, p99: histogram.percentile(99) / 1e6, max: histogram.max / 1e6 }
    }
  }
}

/** Starts a CPU window; `end` answers the use since the start. `others` names more processes to watch. */
export const cpuWindow = (others: Readonly<Record<string, number>> = {}) => {
  const start = performance.now()
  const usage = process.cpuUsage()
  const jsStart = jsThreadTicks()
  const loopStart = performance.eventLoopUtilization()
  const ticks = machineTicks()
  const pgStart = new Map(postgresPids().map((pid) => [pid, processTicks(pid)]))
  const othersStart = Object.fromEntries(Object.entries(others).map(([name, pid]) => [name, processTicks(pid)]))
  return {
    end: (): CpuUse => {
      const elapsedMs = performance.now() - start
      const used = process.cpuUsage(usage)
      const now = machineTicks()
      const total = now.total - ticks.total
      // Backends that started during the window count from zero; ones that ended in it are missed.
      let pgUsed = 0
      for (const pid of postgresPids()) pgUsed += processTicks(pid) - (pgStart.get(pid) ?? 0)
      const pct = (jiffies: number) => round((100 * jiffies * (1000 / userHz)) / elapsedMs, 0)
      return {
        processPct: round((100 * (used.user + used.system)) / (elapsedMs * 1000), 0),
        jsThreadPct: pct(jsThreadTicks() - jsStart),
        eventLoopBusyPct: round(100 * performance.eventLoopUtilization(loopStart).utilization, 0),
        machinePct: total > 0 ? round((100 * (now.busy - ticks.busy)) / total, 0) : NaN,
        stealPct: total > 0 ? round((100 * (now.steal - ticks.steal)) / total, 0) : NaN,
        postgresPct: pct(Math.max(0, pgUsed)),
        othersPct: Object.fromEntries(Object.entries(others).map(([name, pid]) => [name, pct(processTicks(pid) - othersStart[name]!)]))
      }
    }
  }
}

/** The machine's busy share over `ms` while this process idles: other load competing with the run. */
export const backgroundCpu = (ms = 1000) =>
  new Promise<number>((resolve) => {
    const window = cpuWindow()
    setTimeout(() => resolve(window.end().machinePct), ms)
  })

/**
 * Waits (at most `limitMs`) until the machine is mostly idle: other processes' load (tests,
 * builds) on a 2-core machine distorts every figure. Answers the last background reading.
 */
export const awaitIdleMachine = async (thresholdPct: number, limitMs: number) => {
  const deadline = performance.now() + limitMs
  let busy = await backgroundCpu(500)
  while (busy > thresholdPct && performance.now() < deadline) busy = await backgroundCpu(500)
  return busy
}

/** CPU of everything else on the machine (other users' tests, builds), in % of one core. */
export const unrelatedPct = (cpu: CpuUse) =>
  Math.max(0, Math.round((cpu.machinePct - (cpu.stealPct || 0)) * os.cpus().length - cpu.processPct - cpu.postgresPct -
    Object.values(cpu.othersPct).reduce((a, b) => a + b, 0)))

/** CPU microseconds per event of each process, from a CPU window and the event rate. */
export const perEvent = (cpu: CpuUse, eventsPerSecond: number) => {
  const us = (pct: number) => round((pct / 100) * 1e6 / eventsPerSecond, 1)
  return {
    thisProcessUs: us(cpu.processPct),
    jsThreadUs: us(cpu.jsThreadPct),
    postgresUs: us(cpu.postgresPct),
    ...Object.fromEntries(Object.entries(cpu.othersPct).map(([name, pct]) => [`${name.replace(/ (\w)/g, (_, c: string) => c.toUpperCase())}Us`, us(pct)]))
  }
}

export const perEventLine = (cpu: CpuUse, eventsPerSecond: number) => {
  const us = (pct: number) => `${round((pct / 100) * 1e6 / eventsPerSecond, 1)} µs`
  const others = Object.entries(cpu.othersPct).map(([name, pct]) => `, ${name} ${us(pct)}`).join("")
  return `CPU per event: this process ${us(cpu.processPct)}, PostgreSQL ${us(cpu.postgresPct)}${others}`
}

/** Unrelated load above which a figure is marked as disturbed (% of one core). */
export const disturbanceLimitPct = 25

/** Other processes' load, or other guests' (steal, in % of one core), above the limit. */
export const disturbed = (cpu: CpuUse) => unrelatedPct(cpu) + (cpu.stealPct || 0) * os.cpus().length > disturbanceLimitPct

export const cpuLine = (cpu: CpuUse) =>
  `CPU (% of one core): this process ${cpu.processPct} (its JS thread ${cpu.jsThreadPct}, event loop busy ${cpu.eventLoopBusyPct} % of the time), PostgreSQL ${cpu.postgresPct}` +
  Object.entries(cpu.othersPct).map(([name, pct]) => `, ${name} ${pct}`).join("") +
  `, unrelated processes ${unrelatedPct(cpu)} (machine ${cpu.machinePct} % of ${os.cpus().length} cores${cpu.stealPct > 0 ? `, of it ${cpu.stealPct} % stolen by the hypervisor` : ""})` +
  (disturbed(cpu) ? " ⚠ DISTURBED by unrelated load or steal: figure not representative" : "")

// ---- scenarios ----------------------------------------------------------------------------------

export interface BenchArgs {
  /** Emitter options set with `--opt key=value` (numbers and booleans parsed). */
  readonly options: EmitterOptionsInput
  /** `--events N`: overrides the scenario's event count. */
  readonly events: number | undefined
  /** `--seconds N`: overrides the scenario's measuring time per phase. */
  readonly seconds: number | undefined
  /** `--quick`: smaller counts and shorter phases (a smoke run). */
  readonly quick: boolean
  /** `--concurrency 1,10,100`: the closed-loop levels of `write`. */
  readonly concurrency: ReadonlyArray<number> | undefined
  /** `--baseline-seconds N`: how long each point of a baseline sweep is measured. */
  readonly baselineSeconds: number | undefined
  /** `--verify-all`: the ingest server keeps every event whole (not a sample) for verification. */
  readonly verifyAll: boolean
  /** `--minutes N`: how long `soak` runs (fractions allowed). */
  readonly minutes?: number | undefined
}

/** How long each point of a baseline sweep is measured, in seconds. */
export const sweepSeconds = (args: BenchArgs) => args.baselineSeconds ?? (args.quick ? 0.2 : 1)

export interface ScenarioResult {
  /** Readable report lines. */
  readonly report: ReadonlyArray<string>
  /** The scenario's JSON object. */
  readonly json: Record<string, unknown> & { readonly scenario: string }
  /** What makes the run fail although the scenario finished (events lost, corrupted, out of sequence). */
  readonly failures?: ReadonlyArray<string>
}

/** Elapsed milliseconds since `start` (performance.now()). */
export const since = (start: number) => performance.now() - start

/** Fails the effect if it runs longer than `ms` (every phase of the benchmark is bounded). */
export const bounded = <A, E, R>(what: string, limitMs: number, effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.timeoutOrElse({
      duration: limitMs,
      orElse: () => Effect.die(new Error(`${what} did not finish within ${Math.round(limitMs / 1000)} s`))
    })
  )

/** Waits until `check` answers true, polling every `intervalMs`, for at most `limitMs`. */
export const pollUntil = <E, R>(what: string, check: Effect.Effect<boolean, E, R>, intervalMs: number, limitMs: number) =>
  bounded(
    what,
    limitMs,
    Effect.gen(function*() {
      while (!(yield* check)) yield* Effect.sleep(intervalMs)
    })
  )
