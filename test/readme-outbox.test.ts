/**
 * The README's transactional-outbox example, run as written (only its `durable-emitter` import is
 * pointed at this checkout's sources) in a separate process, against a database of its own and
 * the reference ingest server.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { execFile } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { startIngestServer } from "../src/testing/IngestServer.ts"
import { databaseUrl } from "./support/pg.ts"

const root = new URL("../", import.meta.url)
const readme = readFileSync(new URL("README.md", root), "utf8")

/** The first ```ts block of a README section. */
export const exampleOf = (heading: string): string => {
  const at = readme.indexOf(`\n${heading}\n`)
  if (at < 0) throw new Error(`README has no section ${heading}`)
  const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(at))
  if (block === null) throw new Error(`README section ${heading} has no ts block`)
  return block[1]!
}

const admin = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 })

/** A database of its own (the example creates `orders` and the default tables), dropped after. */
const scratchDatabase = Effect.acquireRelease(
  Effect.gen(function*() {
    const name = `det_readme_${process.pid}_${Date.now().toString(36)}`
    yield* SqlClient.SqlClient.use((sql) => sql.unsafe(`CREATE DATABASE ${name}`))
    const url = new URL(databaseUrl)
    url.pathname = `/${name}`
    return { name, url: url.toString() }
  }).pipe(Effect.provide(admin), Effect.orDie),
  ({ name }) => SqlClient.SqlClient.use((sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).pipe(Effect.provide(admin), Effect.ignore)
)

const run = (file: string, env: Record<string, string>) =>
  Effect.callback<{ code: number; stdout: string; stderr: string }>((resume) => {
    const child = execFile(process.execPath, [file], { env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : (typeof error.code === "number" ? error.code : 1), stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

describe("README", () => {
  it.live("the transactional outbox example runs as written: the order and its event commit together and the event is delivered", () =>
    Effect.gen(function*() {
      const server = yield* Effect.acquireRelease(
        Effect.promise(() => startIngestServer({ record: "events" })),
        (s) => Effect.promise(() => s.close())
      )
      const database = yield* scratchDatabase
      const dir = fileURLToPath(new URL(".scratch/", root))
      mkdirSync(dir, { recursive: true })
      const file = `${dir}readme-outbox-${process.pid}.ts`
      const source = exampleOf("## Transactional outbox").replace(
        `from "durable-emitter"`,
        `from ${JSON.stringify(fileURLToPath(new URL("src/index.ts", root)))}`
      )
      writeFileSync(file, source)
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(file, { force: true })))
      const result = yield* run(file, { DATABASE_URL: database.url, INGEST_URL: server.url })
      assert.strictEqual(result.code, 0, result.stderr)
      assert.strictEqual(server.received.stats.events, 1)
      const event = server.received.events[0]!
      assert.strictEqual(event.type, "order.placed")
      assert.strictEqual(event.seqnum, "1")
      const orders = yield* SqlClient.SqlClient.use((sql) => sql.unsafe<{ id: string }>(`SELECT id FROM orders`)).pipe(
        Effect.provide(PgClient.layer({ url: Redacted.make(database.url), maxConnections: 1 }))
      )
      assert.strictEqual(orders.length, 1)
      assert.strictEqual(event.attributes.subject, orders[0]!.id)
    }), 90_000)
})
