/**
 * The write path against a real PostgreSQL: an event the database refuses fails alone (its batch
 * is split); a commit that waits on a lock ends with the server's answer (its statement_timeout is
 * shorter than the commit budget), not with an unknown outcome; and a commit whose backend is
 * killed is resolved by looking its events up.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Fiber, Layer, Latch, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as Config from "../src/Config.ts"
import { CommitFailed, EventTooLarge, InvalidEvent } from "../src/Errors.ts"
import * as Event from "../src/Event.ts"
import { Handoff } from "../src/Handoff.ts"
import { Sequencer, type SequencerOptions } from "../src/Sequencer.ts"
import { serverCommitBoundMs } from "../src/sequencer/outcome.ts"
import { type NewEvent, Store, type StoredEvent } from "../src/Store.ts"
import * as PgStore from "../src/store/PgStore.ts"
import { databaseUrl, scopedPrefix } from "./support/pg.ts"

const context: Event.PrepareContext = { emitterName: "pg-test", maxEventBytes: 1 << 20, now: Date.now() }

const prepared = (source: string, n: number): NewEvent => {
  const event = Event.prepare({ source, type: "t", data: { n } }, context)
  if (event instanceof InvalidEvent || event instanceof EventTooLarge) throw new Error(event.message)
  return event
}

/** Runs SQL on a connection of its own, beside the store's pool. */
const admin = <A>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, unknown>) =>
  SqlClient.SqlClient.use(f).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 })),
    Effect.orDie
  )

/**
 * The Sequencer on a PgStore whose appends wait at a gate, and what it handed off. The store's
 * query timeout is what the emitter gives it: the server's bound for `commitTimeoutMs`.
 */
const setup = (prefix: string, overrides: Partial<SequencerOptions>) =>
  Effect.gen(function*() {
    const options = { ...Config.defaults, writeLingerMs: 0, ...overrides }
    const store = Context.get(
      yield* Layer.build(PgStore.layer({
        url: Redacted.make(databaseUrl),
        tablePrefix: prefix,
        queryTimeout: serverCommitBoundMs(options.commitTimeoutMs)
      })),
      Store
    )
    const gate = yield* Latch.make(true)
    const appends: Array<number> = []
    const gated = Store.of({
      ...store,
      append: (events, o) => Effect.andThen(Effect.sync(() => appends.push(events.length)), Effect.andThen(gate.await, store.append(events, o)))
    })
    const handed: Array<StoredEvent> = []
    const handoff = Handoff.of({ offer: (events) => Effect.sync(() => void handed.push(...events)) })
    const sequencer = Context.get(
      yield* Layer.build(Sequencer.layer(options).pipe(
        Layer.provide([Layer.succeed(Store, gated), Layer.succeed(Handoff, handoff)])
      )),
      Sequencer
    )
    return { sequencer, gate, appends, handed, store }
  })

/** Holds the events table in another session's transaction until the answered effect runs. */
const lockEvents = (prefix: string) =>
  Effect.gen(function*() {
    const locked = yield* Latch.make(false)
    const release = yield* Latch.make(false)
    const holder = yield* Effect.forkChild(admin((sql) =>
      sql.withTransaction(Effect.gen(function*() {
        yield* sql.unsafe(`LOCK TABLE ${prefix}_events IN ACCESS EXCLUSIVE MODE`)
        yield* locked.open
        yield* release.await
      }))
    ))
    yield* locked.await
    return Effect.andThen(release.open, Fiber.join(holder))
  })

describe("Sequencer on PostgreSQL", () => {
  it.live("a poisoned emit among 2 000 good ones in one batch fails alone; all good ones commit", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const { appends, gate, handed, sequencer } = yield* setup(prefix, {
        writeBatchSize: 5000, writeQueueCapacity: 5000, writeConcurrency: 1, commitTimeoutMs: 60_000
      })
      // A refusal validation cannot see: a CHECK constraint on the table.
      yield* admin((sql) => sql.unsafe(`ALTER TABLE ${prefix}_events ADD CONSTRAINT poison CHECK (source <> 'poisoned')`))
      const good = Array.from({ length: 2000 }, (_, i) => prepared("good", i))
      const poisoned = prepared("poisoned", 0)
      yield* gate.close
      const first = yield* Effect.forkChild(sequencer.submit([prepared("good", -1)]))
      while (appends.length === 0) yield* Effect.yieldNow
      const fibers = yield* Effect.forEach(good.slice(0, 1000), (e) => Effect.forkChild(sequencer.submit([e])))
      const bad = yield* Effect.forkChild(Effect.flip(sequencer.submit([poisoned])))
      fibers.push(...yield* Effect.forEach(good.slice(1000), (e) => Effect.forkChild(sequencer.submit([e]))))
      while ((yield* sequencer.queued) < 2001) yield* Effect.yieldNow
      yield* gate.open

      const error = yield* Fiber.join(bad)
      assert.instanceOf(error, CommitFailed)
      assert.isFalse((error as CommitFailed).retryable)
      assert.strictEqual((error as CommitFailed).committed, "no")
      assert.include(error.message, "refused this event")
      assert.include(error.message, "23514")
      yield* Fiber.join(first)
      const receipts = yield* Effect.forEach(fibers, Fiber.join)
      assert.strictEqual(receipts.length, 2000)
      // The 2 001 went to the database as one batch, then in halves.
      assert.strictEqual(appends[1], 2001)
      const rows = yield* admin((sql) => sql.unsafe<{ n: string }>(`SELECT count(*)::text AS n FROM ${prefix}_events`))
      assert.strictEqual(rows[0]!.n, "2001")
      assert.strictEqual(handed.length, 2001)
      const seqs = handed.filter((e) => e.source === "good").map((e) => Number(e.seq)).sort((a, b) => a - b)
      assert.deepStrictEqual(seqs, Array.from({ length: 2001 }, (_, i) => i + 1))
    }), 120_000)

  it.live("a commit blocked by a lock ends with the server's statement timeout: committed no, before commitTimeout", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const commitTimeoutMs = 2000
      const { sequencer, store } = yield* setup(prefix, { commitTimeoutMs })
      // Another session holds the events table: the append waits on the lock.
      const unlock = yield* lockEvents(prefix)
      const started = Date.now()
      const error = yield* Effect.flip(sequencer.submit([prepared("s", 1)]))
      const waited = Date.now() - started
      yield* unlock
      assert.instanceOf(error, CommitFailed)
      assert.strictEqual((error as CommitFailed).committed, "no")
      assert.isTrue((error as CommitFailed).retryable)
      assert.include(error.message, "57014")
      assert.isBelow(waited, commitTimeoutMs)
      // Nothing was written, and the next emit commits.
      const [receipt] = yield* sequencer.submit([prepared("s", 2)])
      assert.strictEqual(receipt!.seq, 1n)
      assert.strictEqual((yield* store.stats).backlog, 1)
    }), 60_000)

  it.live("a backend killed while its append waits: the outcome is looked up, and the caller told committed no", () =>
    Effect.gen(function*() {
      const prefix = yield* scopedPrefix
      const commitTimeoutMs = 4000
      const { sequencer, store } = yield* setup(prefix, { commitTimeoutMs })
      const unlock = yield* lockEvents(prefix)
      const started = Date.now()
      const emit = yield* Effect.forkChild(Effect.flip(sequencer.submit([prepared("s", 1)])))
      // The store's backend, waiting on the lock with its INSERT: terminated, as by an operator.
      let killed = 0
      while (killed === 0) {
        yield* Effect.sleep(20)
        const rows = yield* admin((sql) => sql.unsafe<{ n: number }>(
          `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
           WHERE state = 'active' AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO ${prefix}_events%'`
        ))
        killed = rows[0]!.n
      }
      yield* unlock
      const error = yield* Fiber.join(emit)
      const waited = Date.now() - started
      assert.instanceOf(error, CommitFailed)
      assert.strictEqual((error as CommitFailed).committed, "no")
      assert.isTrue((error as CommitFailed).retryable)
      assert.include(error.message, "looked up afterwards: not committed")
      assert.isBelow(waited, commitTimeoutMs)
      assert.strictEqual((yield* store.stats).backlog, 0)
    }), 60_000)
})
