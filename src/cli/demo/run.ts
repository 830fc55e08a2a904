/**
 * The demo: concurrent producers emit through the whole emitter (commit, publish, ack, delete) to
 * the reference ingest server, which goes down for a while in the middle of the run. At the end every
 * receipt is checked against what the server received and what was dead-lettered: an event that
 * is in neither is lost, and the demo fails.
 *
 * stdout: a header, the summary, and as the LAST line one JSON object with the results.
 * stderr: the live progress display and the library's warnings.
 *
 * Where it runs and what it owns: ./workspace.ts; the run itself: ./scenario.ts; the verdict:
 * ./verdict.ts.
 */
import { Cause, Console, Effect, Layer, Logger, type LogLevel, Option, References, Ref } from "effect"
import { DurableEmitter } from "../../DurableEmitter.ts"
import { Store } from "../../Store.ts"
import { CommandFailed } from "../errors.ts"
import * as Format from "../format.ts"
import { describeTarget, storeLayer, type StoreFlags } from "../target.ts"
import { makeProgress, type Progress } from "./progress.ts"
import { runScenario, type ScenarioSettings } from "./scenario.ts"
import { acquire, type Cleanup, plan, type Plan, poisonType } from "./workspace.ts"

export type { DemoResult } from "./scenario.ts"

export interface DemoSettings extends ScenarioSettings {
  readonly ingestUrl: Option.Option<string>
  readonly keep: boolean
  readonly store: StoreFlags
}

/** Log lines (warnings by default) as single lines that leave the progress display intact. */
const progressLogger = (progress: Progress) =>
  Logger.make(({ cause, logLevel, message }) => {
    const parts = (Array.isArray(message) ? message : [message]).map((part) =>
      typeof part === "string" ? part : JSON.stringify(part, (_, v) => (typeof v === "bigint" ? v.toString() : v))
    )
    if (cause.reasons.length > 0) parts.push(Cause.pretty(cause).split("\n")[0] ?? "")
    progress.note(`${logLevel.toLowerCase()}: ${parts.join(" ")}`)
  })

const header = (settings: DemoSettings, p: Plan, ingestUrl: string, ownServer: boolean, poisonEvery: number) =>
  [
    `durable-emitter demo: ${Format.integer(settings.events)} events from ${settings.producers} producers` +
    (settings.rate > 0 ? ` at ${Format.integer(settings.rate)} events/s` : ", as fast as they go") +
    `, ${settings.payloadBytes}-byte payloads`,
    `  store   ${describeTarget(p.options)}${p.ownTables || p.ownDir ? ` (${settings.keep ? "kept" : "removed"} at the end)` : ""}`,
    `  ingest  ${ownServer ? `reference server at ${ingestUrl}` : `${ingestUrl} (yours: delivery is known only from the emitter's table)`}` +
    (ownServer && settings.outageMs > 0 ? `, down for ${Format.millis(settings.outageMs)} mid-run` : ""),
    ...(poisonEvery > 0 ? [`  every ${Format.integer(poisonEvery)}th event is a ${poisonType} the server rejects for good: a dead letter`] : [])
  ].join("\n")

/** The emitter would deliver rows already waiting in tables the demo did not create to its own server: refuse. */
const refuseWaitingRows = (p: Plan) =>
  Effect.gen(function*() {
    const waiting = yield* Store.use((store) => store.stats).pipe(Effect.provide(storeLayer(p.options)))
    if (waiting.backlog === 0) return
    return yield* new CommandFailed({
      reason: `${describeTarget(p.options)} already hold ${Format.integer(waiting.backlog)} events waiting for delivery: the demo needs ` +
        `tables of its own (leave out ${p.onPostgres ? "--table-prefix" : "--data-dir"})`
    })
  })

export const runDemo = (settings: DemoSettings, logLevel: LogLevel.LogLevel) =>
  Effect.gen(function*() {
    // Validated before anything starts, so a bad setting is one line and nothing to clean up.
    const p = yield* plan(settings.store, settings.ingestUrl)
    const ownServer = Option.isNone(settings.ingestUrl)
    const poisonEvery = ownServer ? settings.poisonEvery : 0
    const cleanup = yield* Ref.make<Cleanup>({ keep: settings.keep, note: "" })
    const progress = makeProgress()
    const logging = Layer.mergeAll(Logger.layer([progressLogger(progress)]), Layer.succeed(References.MinimumLogLevel, logLevel))

    const outcome = yield* Effect.scoped(Effect.gen(function*() {
      const workspace = yield* acquire(p, cleanup)
      yield* Console.log(header(settings, p, workspace.ingestUrl, ownServer, poisonEvery))
      if (!p.ownTables && !p.ownDir) yield* refuseWaitingRows(p)
      if (!p.onPostgres) progress.note(`opening the embedded store in ${p.options.dataDir} (a new data directory takes a few seconds to initialize)`)
      const context = yield* Layer.build(DurableEmitter.layerWith(workspace.input))
      const outcome = yield* runScenario({ ...settings, poisonEvery }, workspace.server, p.onPostgres, progress).pipe(
        Effect.provideContext(context)
      )
      // Rows still waiting are not dropped with the tables: that would lose them.
      if (outcome.result.pending > 0 || outcome.result.lost > 0) yield* Ref.update(cleanup, (c) => ({ ...c, keep: true }))
      return outcome
    }).pipe(Effect.ensuring(Effect.sync(() => progress.done())), Effect.provide(logging)))

    const { note } = yield* Ref.get(cleanup)
    return { ...outcome, poisonEvery, target: describeTarget(p.options), cleanupNote: note }
  })
