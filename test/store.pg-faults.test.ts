/**
 * Faults a real PostgreSQL reports, and how the Store classifies them: a backend terminated
 * (pg_terminate_backend) while its statement waits, or while it is idle; a server that refuses
 * connections; URLs that can never work. Each test checks what the database really holds
 * afterwards, so "committed: no" is shown to be true, not just said.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Fiber, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { type AddressInfo, createConnection, createServer, type Server, type Socket } from "node:net"
import { InvalidConfig, StoreError } from "../src/Errors.ts"
import { Store } from "../src/Store.ts"
import * as PgStore from "../src/store/PgStore.ts"
import { newEvent } from "./StoreContract.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"

const ClientLayer = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 4 })

/** The Store of `layer`, open for the test's scope. */
const storeOf = (layer: Layer.Layer<Store, unknown>) => Effect.map(Layer.build(layer), Context.get(Store))

const appendOne = Store.use((store) => store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 }))

const query = <A extends object>(text: string) => SqlClient.SqlClient.use((sql) => sql.unsafe<A>(text)).pipe(Effect.orDie)

const eventCount = (prefix: string) =>
  Effect.map(query<{ n: bigint }>(`SELECT count(*) AS n FROM ${prefix}_events`), (rows) => Number(rows[0]!.n))

/** The backends of the Store's pool, found by its application_name. */
const backends = (application: string, where = "true") =>
  Effect.map(
    query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = '${application}' AND ${where}`
    ),
    (rows) => rows.map((row) => row.pid)
  )

const waitFor = <A, R>(what: string, check: Effect.Effect<A | undefined, never, R>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      const found = yield* check
      if (found !== undefined) return found
      yield* Effect.sleep(25)
    }
    return yield* Effect.die(new Error(`${what}: not within 5 s`))
  })

const flip = <A>(effect: Effect.Effect<A, unknown>) => Effect.flip(effect) as Effect.Effect<unknown>

/** A port nothing listens on: bound once to get it, then closed. */
const refusedPort = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A TCP proxy to the test database that can be shut: listener closed, every connection cut. */
const proxy = Effect.acquireRelease(
  Effect.callback<{ readonly port: number; readonly cut: () => void }>((resume) => {
    const target = new URL(databaseUrl)
    const sockets = new Set<Socket>()
    const server: Server = createServer((client) => {
      const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) })
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.on("close", () => sockets.delete(socket))
      }
      client.pipe(upstream).pipe(client)
    })
    const cut = () => {
      server.close()
      for (const socket of sockets) socket.destroy()
    }
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ port: (server.address() as AddressInfo).port, cut })))
  }),
  ({ cut }) => Effect.sync(cut)
)

const urlOnPort = (port: number) => {
  const url = new URL(databaseUrl)
  url.hostname = "127.0.0.1"
  url.port = String(port)
  return Redacted.make(url.toString())
}

describe("PgStore faults on a real PostgreSQL", () => {
  it.live("a backend terminated while its append waits: retryable, committed unknown (the driver cannot tell), nothing committed", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const application = `${prefix}_terminated`
      const store = yield* storeOf(
        PgStore.layer({ url: Redacted.make(databaseUrl), tablePrefix: prefix, applicationName: application })
      )
      const sql = yield* SqlClient.SqlClient
      const error = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql.unsafe(`LOCK TABLE ${prefix}_sequences IN ACCESS EXCLUSIVE MODE`)
        const append = yield* Effect.forkChild(flip(store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 })))
        const [pid] = yield* waitFor(
          "the append waiting on the lock",
          Effect.map(backends(application, "wait_event_type = 'Lock'"), (pids) => pids.length > 0 ? pids : undefined)
        )
        yield* query(`SELECT pg_terminate_backend(${pid})`)
        return yield* Fiber.join(append)
      }))
      assert.instanceOf(error, StoreError)
      const failure = error as StoreError
      assert.strictEqual(failure.operation, "append")
      // PostgreSQL answers the statement with FATAL 57P01 and closes the connection; sql-pg
      // reports the close, not the answer (the statement was waiting for ReadyForQuery). So the
      // Store cannot tell whether the statement committed: retryable, committed unknown. That
      // is the honest answer, and the table shows the conservative one: nothing committed.
      assert.strictEqual(failure.driver?.kind, "ConnectionError")
      assert.strictEqual(failure.driver?.phase, "query")
      assert.isTrue(failure.retryable)
      assert.strictEqual(failure.committed, "unknown")
      assert.strictEqual(yield* eventCount(prefix), 0)
      // and the pool recovers by itself: the next append gets a new connection
      const [appended] = yield* store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 })
      assert.strictEqual(appended!.seq, 1n)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 30_000)

  it.live("every idle backend of the store terminated: the next append reconnects and commits", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const application = `${prefix}_idle`
      const store = yield* storeOf(
        PgStore.layer({ url: Redacted.make(databaseUrl), tablePrefix: prefix, applicationName: application })
      )
      yield* store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 })
      const pids = yield* backends(application)
      assert.isAtLeast(pids.length, 1)
      yield* query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '${application}'`)
      yield* waitFor("the backends gone", Effect.map(backends(application), (left) => left.length === 0 ? true : undefined))
      yield* Effect.sleep(100)
      const outcomes = []
      for (let i = 0; i < 3; i++) outcomes.push(yield* Effect.result(store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 })))
      // A connection the pool had not yet noticed dead may fail one call, retryably; then it commits.
      for (const outcome of outcomes) {
        if (outcome._tag === "Failure") assert.isTrue(outcome.failure.retryable, outcome.failure.message)
      }
      assert.strictEqual(outcomes.at(-1)!._tag, "Success")
      assert.strictEqual(yield* eventCount(prefix), 1 + outcomes.filter((o) => o._tag === "Success").length)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 30_000)

  it.live("a refused connection (nothing sent): retryable, committed no, ECONNREFUSED named", () =>
    Effect.gen(function*() {
      const port = yield* refusedPort
      const error = yield* flip(Effect.provide(appendOne, PgStore.layer({ url: urlOnPort(port), connectTimeout: "2 seconds" })))
      assert.instanceOf(error, StoreError)
      const failure = error as StoreError
      assert.deepStrictEqual([failure.retryable, failure.committed, failure.driver?.errno, failure.driver?.phase], [
        true,
        "no",
        "ECONNREFUSED",
        "connect"
      ])
    }), 30_000)

  it.live("the database going away under a built store: the append that cannot connect says committed no", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const { cut, port } = yield* proxy
      const store = yield* storeOf(
        PgStore.layer({ url: urlOnPort(port), tablePrefix: prefix, connectTimeout: "2 seconds" })
      )
      yield* store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 })
      cut()
      yield* Effect.sleep(100)
      const outcomes = []
      for (let i = 0; i < 3; i++) outcomes.push(yield* Effect.flip(store.append([newEvent("a", "x")], { now: 0, nextAttemptAt: 0 })))
      for (const failure of outcomes) assert.isTrue(failure.retryable, failure.message)
      // once the pool knows its connections are gone, nothing is sent: refused, committed no
      const last = outcomes.at(-1)!
      assert.deepStrictEqual([last.committed, last.driver?.errno], ["no", "ECONNREFUSED"], last.message)
      assert.strictEqual(yield* eventCount(prefix), 1)
    }).pipe(Effect.scoped, Effect.provide(ClientLayer)), 30_000)
})

describe("PgStore URLs that can never work", () => {
  it.effect("are InvalidConfig naming the url, before anything connects", () =>
    Effect.gen(function*() {
      for (
        const url of [
          "not a url",
          "postgres://u@127.0.0.1:99999/db",
          "mysql://u@127.0.0.1:3306/db",
          "postgres://u@127.0.0.1/db?sslmode=maybe",
          "postgres://u@127.0.0.1/db?port=0",
          "postgres://u@127.0.0.1/%zz",
          ""
        ]
      ) {
        const error = yield* flip(Effect.provide(appendOne, PgStore.layer({ url: Redacted.make(url) })))
        assert.instanceOf(error, InvalidConfig, url)
        assert.strictEqual((error as InvalidConfig).option, "url", url)
        assert.isFalse((error as InvalidConfig).retryable)
      }
    }))

  it.effect("the refusal never quotes the URL: it may hold a password", () =>
    Effect.gen(function*() {
      const error = yield* flip(Effect.provide(appendOne, PgStore.layer({ url: Redacted.make("mysql://u:s3cret@h/db") })))
      assert.notInclude((error as InvalidConfig).message, "s3cret")
    }))
})
