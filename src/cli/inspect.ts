/** `durable-emitter inspect`: what is waiting in the table, and what was dead-lettered. */
import { Clock, Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { type DeadLetter, Store } from "../Store.ts"
import { userFacing } from "./errors.ts"
import * as Format from "./format.ts"
import { describeTarget, requireTables, resolveOptions, storeFlags, storeLayer } from "./target.ts"

const pageLimit = 500
const windowsMs = [60_000, 3_600_000, 86_400_000, 7 * 86_400_000, 30 * 86_400_000]

/**
 * The `n` most recent dead letters. The Store lists oldest first, so look back through growing
 * windows until one holds `n` (never reading more than a page of rows).
 */
export const latestDeadLetters = (total: number, n: number) =>
  Effect.gen(function*() {
    if (n <= 0 || total === 0) return []
    const store = yield* Store
    if (total <= pageLimit) return (yield* store.listDeadLetters({})).slice(-n)
    const now = yield* Clock.currentTimeMillis
    let best: ReadonlyArray<DeadLetter> = []
    for (const window of [...windowsMs, Infinity]) {
      const page = yield* store.listDeadLetters({ ...(window === Infinity ? {} : { since: now - window }), limit: pageLimit })
      if (page.length >= pageLimit) return best.length > 0 ? best.slice(-n) : page.slice(0, n)
      best = page
      if (page.length >= n) break
    }
    return best.slice(-n)
  })

const deadLetterJson = (d: DeadLetter) => ({ ...Format.deadLetter(d), payloadBytes: d.payload.byteLength })

export const inspectCommand = Command.make("inspect", {
  ...storeFlags,
  json: Flag.Boolean("json").pipe(Flag.withDescription("print one JSON object instead of text"), Flag.withDefault(false)),
  deadLetters: Flag.Int("dead-letters").pipe(
    Flag.withDescription("how many of the latest dead letters to show"),
    Flag.withDefault(5)
  )
}, (flags) =>
  Effect.gen(function*() {
    const options = yield* resolveOptions(flags)
    yield* requireTables(options)
    const report = yield* Effect.gen(function*() {
      const store = yield* Store
      const stats = yield* store.stats
      const bySourceType = yield* store.countBySourceType
      const latest = yield* latestDeadLetters(stats.deadLetters, flags.deadLetters)
      return { stats, bySourceType, latest, now: yield* Clock.currentTimeMillis }
    }).pipe(Effect.provide(storeLayer(options)))
    const { bySourceType, latest, now, stats } = report
    const oldest = Option.getOrUndefined(stats.oldestCreatedAt)

    if (flags.json) {
      return yield* Console.log(JSON.stringify({
        store: describeTarget(options),
        backlog: stats.backlog,
        exact: stats.exact,
        oldestCreatedAt: oldest === undefined ? null : Format.iso(oldest),
        oldestAgeMs: oldest === undefined ? null : Math.max(0, now - oldest),
        payloadBytes: stats.payloadBytes,
        deadLetters: stats.deadLetters,
        bySourceType: bySourceType.map((c) => ({
          source: c.source,
          type: c.type,
          count: c.count,
          oldestCreatedAt: Format.iso(c.oldestCreatedAt)
        })),
        latestDeadLetters: latest.map(deadLetterJson)
      }))
    }

    const estimate = stats.exact ? "" : " (estimate)"
    const lines = [
      `inspect: ${describeTarget(options)}`,
      "",
      `backlog        ${Format.integer(stats.backlog)} events waiting for delivery${estimate}`,
      `oldest         ${oldest === undefined ? "-" : `${Format.iso(oldest)} (${Format.millis(Math.max(0, now - oldest))} ago)`}`,
      `payload        ${Format.bytes(stats.payloadBytes)}${estimate}`,
      `dead letters   ${Format.integer(stats.deadLetters)}${estimate}`
    ]
    if (bySourceType.length > 0) {
      lines.push("", "backlog by source and type")
      lines.push(Format.table(
        ["SOURCE", "TYPE", "EVENTS", "OLDEST"],
        bySourceType.map((c) => [c.source, c.type, Format.integer(c.count), `${Format.millis(Math.max(0, now - c.oldestCreatedAt))} ago`])
      ))
    }
    if (latest.length > 0) {
      lines.push("", `latest dead letters (${latest.length} of ${Format.integer(stats.deadLetters)}; see: durable-emitter dead-letters list)`)
      lines.push(Format.table(
        ["DEAD-LETTERED", "SOURCE", "TYPE", "SEQ", "CODE", "REASON"],
        latest.map((d) => [Format.iso(d.deadLetteredAt), d.source, d.type, d.seq.toString(), d.code, Format.oneLine(d.reason, 80)])
      ))
    }
    yield* Console.log(lines.join("\n"))
  }).pipe(userFacing)).pipe(
  Command.withShortDescription("show the backlog, per source and type, and the dead letters"),
  Command.withDescription(
    "Show the backlog (events committed and not yet delivered), the age of the oldest, the payload bytes pending, " +
      "the backlog per source and type, and the dead letters with the latest few. Reads only; changes nothing."
  ),
  Command.withExamples([
    { command: "durable-emitter inspect" },
    { command: "durable-emitter inspect --json --dead-letters 20" }
  ])
)
