/** `durable-emitter dead-letters list|replay|purge`: events that could never be delivered. */
import { Clock, Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { type DeadLetterFilter, Store } from "../Store.ts"
import { CommandFailed, userFacing } from "./errors.ts"
import * as Format from "./format.ts"
import { describeTarget, requireTables, resolveOptions, storeFlags, storeLayer, type StoreFlags } from "./target.ts"

const filterFlags = {
  source: Flag.String("source").pipe(Flag.withDescription("only this source"), Flag.optional),
  type: Flag.String("type").pipe(Flag.withDescription("only this type"), Flag.optional),
  since: Flag.Date("since").pipe(
    Flag.withDescription("only dead-lettered at or after this time (ISO 8601, e.g. 2025-01-31T12:00:00Z)"),
    Flag.optional
  ),
  until: Flag.Date("until").pipe(Flag.withDescription("only dead-lettered before this time (ISO 8601)"), Flag.optional)
} as const

interface FilterFlags {
  readonly source: Option.Option<string>
  readonly type: Option.Option<string>
  readonly since: Option.Option<Date>
  readonly until: Option.Option<Date>
}

const toFilter = (flags: FilterFlags, limit: Option.Option<number>) =>
  Effect.gen(function*() {
    if (Option.isSome(limit) && limit.value < 1) return yield* new CommandFailed({ reason: "--limit must be at least 1" })
    const since = Option.map(flags.since, (d) => d.getTime())
    const until = Option.map(flags.until, (d) => d.getTime())
    if (Option.isSome(since) && Option.isSome(until) && since.value >= until.value) {
      return yield* new CommandFailed({ reason: "--since must be before --until" })
    }
    return {
      source: Option.getOrUndefined(flags.source),
      type: Option.getOrUndefined(flags.type),
      since: Option.getOrUndefined(since),
      until: Option.getOrUndefined(until),
      limit: Option.getOrUndefined(limit)
    } satisfies DeadLetterFilter
  })

const describeFilter = (filter: DeadLetterFilter): string => {
  const parts: Array<string> = []
  if (filter.source !== undefined) parts.push(`source ${JSON.stringify(filter.source)}`)
  if (filter.type !== undefined) parts.push(`type ${JSON.stringify(filter.type)}`)
  if (filter.since !== undefined) parts.push(`since ${Format.iso(filter.since)}`)
  if (filter.until !== undefined) parts.push(`until ${Format.iso(filter.until)}`)
  if (filter.limit !== undefined) parts.push(`at most ${filter.limit}`)
  return parts.length === 0 ? "all" : parts.join(", ")
}

/** Runs `body` with the Store of the flags' target. */
const withStore = <A, E>(flags: StoreFlags, body: (target: string) => Effect.Effect<A, E, Store>) =>
  Effect.gen(function*() {
    const options = yield* resolveOptions(flags)
    yield* requireTables(options)
    return yield* body(describeTarget(options)).pipe(Effect.provide(storeLayer(options)))
  })

const limitFlag = (description: string) => Flag.Int("limit").pipe(Flag.withDescription(description), Flag.optional)

const list = Command.make("list", {
  ...storeFlags,
  ...filterFlags,
  limit: Flag.Int("limit").pipe(Flag.withDescription("show at most this many, oldest first"), Flag.withDefault(100)),
  json: Flag.Boolean("json").pipe(Flag.withDescription("one JSON object per dead letter (payload in base64)"), Flag.withDefault(false))
}, (flags) =>
  withStore(flags, (target) =>
    Effect.gen(function*() {
      const filter = yield* toFilter(flags, Option.some(flags.limit))
      const store = yield* Store
      const rows = yield* store.listDeadLetters(filter)
      if (flags.json) {
        for (const d of rows) {
          yield* Console.log(JSON.stringify({ ...Format.deadLetter(d), payload: Buffer.from(d.payload).toString("base64") }))
        }
        return
      }
      yield* Console.log(`dead letters: ${target}; filter: ${describeFilter(filter)}`)
      if (rows.length === 0) return yield* Console.log("none")
      yield* Console.log(Format.table(
        ["DEAD-LETTERED", "SOURCE", "TYPE", "SEQ", "EVENT ID", "CODE", "ATTEMPTS", "REASON"],
        rows.map((d) => [
          Format.iso(d.deadLetteredAt),
          d.source,
          d.type,
          d.seq.toString(),
          d.eventId,
          d.code,
          String(d.attempts),
          Format.oneLine(d.reason, 80)
        ])
      ))
      yield* Console.log(
        rows.length === flags.limit
          ? `${rows.length} shown; there may be more (raise --limit, or narrow with --source/--type/--since/--until)`
          : `${rows.length} dead letter${rows.length === 1 ? "" : "s"}`
      )
    })).pipe(userFacing)).pipe(
  Command.withShortDescription("list dead letters, oldest first"),
  Command.withDescription("List dead letters, oldest first, with their code and reason."),
  Command.withExamples([
    { command: "durable-emitter dead-letters list --type invoice.paid --since 2025-01-31T00:00:00Z" },
    { command: "durable-emitter dead-letters list --json --limit 1000 > dead-letters.jsonl" }
  ])
)

const replay = Command.make("replay", {
  ...storeFlags,
  ...filterFlags,
  limit: limitFlag("replay at most this many, oldest first (default: every match)")
}, (flags) =>
  withStore(flags, (target) =>
    Effect.gen(function*() {
      const filter = yield* toFilter(flags, flags.limit)
      const store = yield* Store
      const now = yield* Clock.currentTimeMillis
      const n = yield* store.replayDeadLetters(filter, now)
      yield* Console.log(`dead letters: ${target}; filter: ${describeFilter(filter)}`)
      yield* Console.log(
        `replayed ${Format.integer(n)} dead letter${n === 1 ? "" : "s"}: back in the events table with their id and seq, ` +
          "due now; a running emitter's retransmitter delivers them"
      )
    })).pipe(userFacing)).pipe(
  Command.withShortDescription("move dead letters back into the events table, to be delivered again"),
  Command.withDescription(
    "Move dead letters back into the events table (same event id and seq, attempts and time to live start over), " +
      "for instance after fixing the ingest side. A running emitter delivers them."
  ),
  Command.withExamples([{ command: "durable-emitter dead-letters replay --source billing --type invoice.paid" }])
)

const purge = Command.make("purge", {
  ...storeFlags,
  ...filterFlags,
  limit: limitFlag("purge at most this many, oldest first (default: every match)"),
  yes: Flag.Boolean("yes").pipe(Flag.withDescription("really delete them (without it, only says how many match)"), Flag.withDefault(false))
}, (flags) =>
  withStore(flags, (target) =>
    Effect.gen(function*() {
      const filter = yield* toFilter(flags, flags.limit)
      const store = yield* Store
      yield* Console.log(`dead letters: ${target}; filter: ${describeFilter(filter)}`)
      if (!flags.yes) {
        const cap = 10_000
        const matching = (yield* store.listDeadLetters({ ...filter, limit: Math.min(filter.limit ?? cap, cap) })).length
        if (matching === 0) return yield* Console.log("no dead letters match; nothing to purge")
        return yield* new CommandFailed({
          reason: `${matching >= cap ? `at least ${Format.integer(cap)}` : Format.integer(matching)} dead letter${
            matching === 1 ? "" : "s"
          } match; nothing purged: add --yes to delete them for good`
        })
      }
      const n = yield* store.purgeDeadLetters(filter)
      yield* Console.log(`purged ${Format.integer(n)} dead letter${n === 1 ? "" : "s"}`)
    })).pipe(userFacing)).pipe(
  Command.withShortDescription("delete dead letters for good (asks for --yes)"),
  Command.withDescription("Delete dead letters for good. Asks for --yes."),
  Command.withExamples([{ command: "durable-emitter dead-letters purge --until 2025-01-01T00:00:00Z --yes" }])
)

export const deadLettersCommand = Command.make("dead-letters").pipe(
  Command.withShortDescription("list, replay or purge dead letters"),
  Command.withDescription(
    "Events the ingest service rejected for good (or that expired): list them, replay them into the events table, or purge them."
  ),
  Command.withSubcommands([list, replay, purge])
)
