/** The test PostgreSQL database and per-test tables, for suites that run against a real one. */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"

export const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"

const runId = `det_${process.pid}_${Date.now().toString(36)}`
let prefixes = 0
/** A table prefix no other test (or concurrent test run) uses. */
export const freshPrefix = () => `${runId}_${prefixes++}`

/**
 * Drops every table of a prefix, the store's and any a test made beside them (`<prefix>_orders`);
 * runs on its own short-lived connection. The shared database has autovacuum off: a table left
 * behind stays, and so do its catalog rows.
 */
export const dropTables = (prefix: string) =>
  SqlClient.SqlClient.use((sql) =>
    Effect.flatMap(
      sql.unsafe<{ name: string }>(
        "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, $1)",
        [`${prefix}_`]
      ),
      (rows) => rows.length === 0 ? Effect.void : sql.unsafe(`DROP TABLE IF EXISTS ${rows.map((r) => r.name).join(", ")} CASCADE`)
    )
  ).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 })),
    Effect.orDie
  )

/** A fresh table prefix whose tables are dropped when the test's scope closes. */
export const scopedPrefix = Effect.gen(function*() {
  const prefix = freshPrefix()
  yield* Effect.addFinalizer(() => dropTables(prefix))
  return prefix
})
