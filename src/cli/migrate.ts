/** `durable-emitter migrate`: creates or updates the tables and says what it did. */
import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { SqlClient } from "effect/sql"
import { migrate, tables, type Tables } from "../store/pgSchema.ts"
import { userFacing } from "./errors.ts"
import { iso } from "./format.ts"
import { describeTarget, resolveOptions, sqlClientLayer, storeFlags } from "./target.ts"

interface Applied {
  readonly version: number
  readonly name: string
  readonly appliedAt: string
}

const applied = (sql: SqlClient.SqlClient, t: Tables) =>
  Effect.gen(function*() {
    const [found] = yield* sql.unsafe<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [t.migrations])
    if (found?.exists !== true) return []
    const rows = yield* sql.unsafe<{ version: number; name: string; applied_at: number }>(
      `SELECT version, name, (extract(epoch FROM applied_at) * 1000)::float8 AS applied_at FROM ${t.migrations} ORDER BY version`
    )
    return rows.map((row): Applied => ({ version: Number(row.version), name: row.name, appliedAt: iso(Number(row.applied_at)) }))
  })

export const migrateCommand = Command.make("migrate", storeFlags, (flags) =>
  Effect.gen(function*() {
    const options = yield* resolveOptions(flags)
    const t = yield* tables(options.tablePrefix)
    yield* Console.log(`migrate: ${describeTarget(options)}`)
    const { after, before } = yield* Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const before = yield* applied(sql, t)
      yield* migrate(sql, t)
      return { before, after: yield* applied(sql, t) }
    }).pipe(Effect.provide(sqlClientLayer(options)))
    const known = new Set(before.map((m) => m.version))
    const fresh = after.filter((m) => !known.has(m.version))
    for (const m of fresh) yield* Console.log(`applied migration ${m.version} (${m.name})`)
    const latest = after.at(-1)
    if (fresh.length === 0) {
      yield* Console.log(
        latest === undefined ? "nothing to do" : `already up to date: migration ${latest.version} (${latest.name}) applied ${latest.appliedAt}`
      )
    }
    yield* Console.log(`tables: ${[t.events, t.sequences, t.deadLetters, t.migrations].join(", ")}`)
  }).pipe(userFacing)).pipe(
  Command.withShortDescription("create or update the tables"),
  Command.withDescription(
    "Create or update the emitter's tables (events, sequences, dead letters) in PostgreSQL (DATABASE_URL or --database-url) " +
      "or in the embedded store's data directory. Safe to run while emitters are running, and from several processes at once."
  ),
  Command.withExamples([
    { command: "durable-emitter migrate", description: "migrate the database of DATABASE_URL (or the embedded store)" },
    { command: "durable-emitter migrate --database-url postgres://localhost/app --table-prefix billing_events" }
  ])
)
