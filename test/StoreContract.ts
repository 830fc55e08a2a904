/**
 * The Store contract: every Store implementation runs these tests. Each test builds its own
 * Store from `makeStore` (a fresh, empty one), and passes times explicitly, so nothing sleeps.
 */
import { assert, describe, type Vitest } from "@effect/vitest"
import { Effect, type Layer, Option } from "effect"
import { type NewEvent, Store } from "../src/Store.ts"

const T0 = 1_700_000_000_123 // millisecond precision must round-trip
const encoder = new TextEncoder()
let counter = 0

export const newEvent = (source: string, type: string, payload?: Uint8Array): NewEvent => {
  const n = counter++
  return {
    eventId: crypto.randomUUID(),
    source,
    type,
    payload: payload ?? encoder.encode(`${source}/${type}/${n}`)
  }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

const seqsOf = (values: ReadonlyArray<bigint>) => values.map(Number)

export const storeContract = <R>(it: Vitest.MethodsNonLive<R>, makeStore: Layer.Layer<Store, unknown, R>) => {
  const test = <A, E>(name: string, body: (store: Store["Service"]) => Effect.Effect<A, E>, timeout?: number) =>
    it.effect(
      name,
      () => Effect.gen(function*() { return yield* body(yield* Store) }).pipe(Effect.provide(makeStore)),
      timeout
    )

  describe("append", () => {
    test("assigns row ids and per-(source, type) seqs, answering in input order", (store) =>
      Effect.gen(function*() {
        const batch = [
          newEvent("a", "x"),
          newEvent("b", "y"),
          newEvent("a", "x"),
          newEvent("a", "z"),
          newEvent("b", "y"),
          newEvent("a", "x")
        ]
        const first = yield* store.append(batch, { now: T0, nextAttemptAt: T0 + 1000 })
        assert.deepStrictEqual(first.map((r) => r.eventId), batch.map((e) => e.eventId))
        assert.deepStrictEqual(seqsOf(first.map((r) => r.seq)), [1, 1, 2, 1, 2, 3])
        assert.strictEqual(new Set(first.map((r) => r.rowId)).size, batch.length)

        const second = yield* store.append([newEvent("a", "z"), newEvent("a", "x"), newEvent("c", "x")], {
          now: T0,
          nextAttemptAt: T0
        })
        assert.deepStrictEqual(seqsOf(second.map((r) => r.seq)), [2, 4, 1])
        for (const row of second) assert.isFalse(first.some((r) => r.rowId === row.rowId))
      }))

    test("a batch of one (source, type): consecutive seqs in input order, each stored with its own event", (store) =>
      Effect.gen(function*() {
        yield* store.append([newEvent("k", "v")], { now: T0, nextAttemptAt: T0 })
        const batch = range(50).map(() => newEvent("k", "v"))
        const appended = yield* store.append(batch, { now: T0, nextAttemptAt: T0 })
        assert.deepStrictEqual(appended.map((r) => r.eventId), batch.map((e) => e.eventId))
        assert.deepStrictEqual(seqsOf(appended.map((r) => r.seq)), range(50).map((i) => i + 2))
        const claimed = yield* store.claim({ now: T0, limit: 100, leaseBaseMs: 1000, leaseMaxMs: 1000 })
        const byRow = new Map(claimed.map((c) => [c.rowId, c]))
        batch.forEach((event, i) => {
          const row = byRow.get(appended[i]!.rowId)
          assert.strictEqual(row?.eventId, event.eventId)
          assert.strictEqual(row?.seq, appended[i]!.seq)
          assert.deepStrictEqual(Array.from(row!.payload), Array.from(event.payload))
        })
      }))

    test("keeps (source, type) apart: the same source with another type, or the reverse, is another sequence", (store) =>
      Effect.gen(function*() {
        const appended = yield* store.append(
          [newEvent("s", "t"), newEvent("t", "s"), newEvent("s", "s"), newEvent("s", "t")],
          { now: T0, nextAttemptAt: T0 }
        )
        assert.deepStrictEqual(seqsOf(appended.map((r) => r.seq)), [1, 1, 1, 2])
      }))

    test("an empty batch writes nothing", (store) =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* store.append([], { now: T0, nextAttemptAt: T0 }), [])
        const stats = yield* store.stats
        assert.strictEqual(stats.backlog, 0)
        const next = yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        assert.strictEqual(next[0]?.seq, 1n)
      }))

    test("stores every field exactly (payload bytes, times to the millisecond)", (store) =>
      Effect.gen(function*() {
        const payload = new Uint8Array([0, 1, 2, 255, 0, 128])
        const event = newEvent("src", "type.v1", payload)
        const [appended] = yield* store.append([event], { now: T0, nextAttemptAt: T0 + 1 })
        assert.deepStrictEqual(yield* store.claim({ now: T0, limit: 10, leaseBaseMs: 1000, leaseMaxMs: 1000 }), [])
        const [claimed] = yield* store.claim({ now: T0 + 1, limit: 10, leaseBaseMs: 1000, leaseMaxMs: 1000 })
        assert.isDefined(claimed)
        assert.strictEqual(claimed!.rowId, appended!.rowId)
        assert.strictEqual(claimed!.eventId, event.eventId)
        assert.strictEqual(claimed!.source, "src")
        assert.strictEqual(claimed!.type, "type.v1")
        assert.strictEqual(claimed!.seq, 1n)
        assert.deepStrictEqual(Array.from(claimed!.payload), Array.from(payload))
        assert.strictEqual(claimed!.createdAt, T0)
        assert.strictEqual(claimed!.attempts, 1)
      }))

    test("100 concurrent appends: every key's seqs are exactly 1..N", (store) =>
      Effect.gen(function*() {
        const keys = [["a", "x"], ["a", "y"], ["b", "x"]] as const
        const batches = range(100).map((i) =>
          range(1 + (i % 7)).map((j) => {
            const [source, type] = keys[(i + j) % keys.length]!
            return newEvent(source, type)
          })
        )
        const results = yield* Effect.forEach(
          batches,
          (batch) => store.append(batch, { now: T0, nextAttemptAt: T0 + 60_000 }),
          { concurrency: "unbounded" }
        )
        const perKey = new Map<string, Array<number>>()
        results.forEach((result, i) => {
          const batch = batches[i]!
          assert.strictEqual(result.length, batch.length)
          const lastInBatch = new Map<string, number>()
          result.forEach((row, j) => {
            const event = batch[j]!
            assert.strictEqual(row.eventId, event.eventId)
            const key = `${event.source}/${event.type}`
            const seq = Number(row.seq)
            // within one batch a key's numbers are consecutive, in input order
            const previous = lastInBatch.get(key)
            if (previous !== undefined) assert.strictEqual(seq, previous + 1)
            lastInBatch.set(key, seq)
            perKey.set(key, [...(perKey.get(key) ?? []), seq])
          })
        })
        assert.strictEqual(perKey.size, keys.length)
        let total = 0
        for (const [key, seqs] of perKey) {
          const sorted = [...seqs].sort((a, b) => a - b)
          assert.deepStrictEqual(sorted, range(sorted.length).map((i) => i + 1), key)
          total += sorted.length
        }
        assert.strictEqual(total, batches.flat().length)
        assert.strictEqual((yield* store.stats).backlog, total)
      }), 30_000)
  })

  describe("lookup", () => {
    test("finds the rows one append wrote, by event id and that append's first lease", (store) =>
      Effect.gen(function*() {
        const batch = [newEvent("a", "x"), newEvent("b", "y"), newEvent("a", "x")]
        const appended = yield* store.append(batch, { now: T0, nextAttemptAt: T0 + 60_000 })
        yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 + 60_001 })
        const found = yield* store.lookup([...batch.map((e) => e.eventId), crypto.randomUUID()], T0 + 60_000)
        const byId = (rows: ReadonlyArray<{ readonly eventId: string }>) => [...rows].sort((a, b) => a.eventId.localeCompare(b.eventId))
        assert.deepStrictEqual(byId(found), byId(appended))
        // Another lease is another append; ids that were never written are not found.
        assert.deepStrictEqual(yield* store.lookup(batch.map((e) => e.eventId), T0 + 60_001), [])
        assert.deepStrictEqual(yield* store.lookup([crypto.randomUUID()], T0 + 60_000), [])
        assert.deepStrictEqual(yield* store.lookup([], T0 + 60_000), [])
      }))

    test("does not find rows that were deleted", (store) =>
      Effect.gen(function*() {
        const event = newEvent("a", "x")
        const [row] = yield* store.append([event], { now: T0, nextAttemptAt: T0 + 60_000 })
        yield* store.delete([row!.rowId])
        assert.deepStrictEqual(yield* store.lookup([event.eventId], T0 + 60_000), [])
      }))
  })

  describe("claim", () => {
    const lease = { leaseBaseMs: 1000, leaseMaxMs: 8000 }

    test("claims only due rows, oldest next attempt first, at most `limit`", (store) =>
      Effect.gen(function*() {
        const late = yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 + 500 })
        const early = yield* store.append([newEvent("a", "x"), newEvent("a", "x")], { now: T0, nextAttemptAt: T0 + 100 })
        yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 + 10_000 })
        const claimed = yield* store.claim({ now: T0 + 500, limit: 2, ...lease })
        assert.deepStrictEqual(claimed.map((r) => r.rowId), early.map((r) => r.rowId))
        const rest = yield* store.claim({ now: T0 + 500, limit: 10, ...lease })
        assert.deepStrictEqual(rest.map((r) => r.rowId), late.map((r) => r.rowId))
        assert.deepStrictEqual(yield* store.claim({ now: T0 + 500, limit: 10, ...lease }), [])
      }))

    test("concurrent claimers get disjoint rows, and all of them", (store) =>
      Effect.gen(function*() {
        const appended = yield* store.append(range(50).map(() => newEvent("a", "x")), { now: T0, nextAttemptAt: T0 })
        const claims = yield* Effect.forEach(range(5), () => store.claim({ now: T0, limit: 15, ...lease }), {
          concurrency: "unbounded"
        })
        const ids = claims.flat().map((r) => r.rowId)
        for (const claim of claims) assert.isAtMost(claim.length, 15)
        assert.strictEqual(new Set(ids).size, ids.length, "a row was claimed twice")
        assert.deepStrictEqual(
          [...ids].sort((a, b) => (a < b ? -1 : 1)),
          appended.map((r) => r.rowId).sort((a, b) => (a < b ? -1 : 1))
        )
        for (const row of claims.flat()) assert.strictEqual(row.attempts, 1)
      }), 30_000)

    test("a claimed row is leased: not claimable again until base * 2^attempts (capped) has passed", (store) =>
      Effect.gen(function*() {
        const [row] = yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        const claimAt = (now: number) =>
          store.claim({ now, limit: 10, ...lease }).pipe(
            Effect.map((rows) => rows.filter((r) => r.rowId === row!.rowId).map((r) => r.attempts))
          )
        let now = T0
        // leases after attempts 0..5: 1000, 2000, 4000, 8000, 8000 (capped), 8000
        for (const [attempts, next] of [[1, 1000], [2, 2000], [3, 4000], [4, 8000], [5, 8000], [6, 8000]] as const) {
          assert.deepStrictEqual(yield* claimAt(now), [attempts], `claim at +${now - T0}`)
          assert.deepStrictEqual(yield* claimAt(now), [], "claimed twice at the same time")
          assert.deepStrictEqual(yield* claimAt(now + next - 1), [], `lease ended early after attempt ${attempts}`)
          now += next
        }
      }))

    test("reschedule moves the next attempt and leaves other rows alone", (store) =>
      Effect.gen(function*() {
        const rows = yield* store.append([newEvent("a", "x"), newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        yield* store.reschedule([rows[0]!.rowId, 999_999n], T0 + 5000, "unavailable", 0)
        yield* store.reschedule([], T0 + 5000, "nothing", 0)
        const now = yield* store.claim({ now: T0, limit: 10, leaseBaseMs: 60_000, leaseMaxMs: 60_000 })
        assert.deepStrictEqual(now.map((r) => r.rowId), [rows[1]!.rowId])
        assert.deepStrictEqual(yield* store.claim({ now: T0 + 4999, limit: 10, leaseBaseMs: 60_000, leaseMaxMs: 60_000 }), [])
        const later = yield* store.claim({ now: T0 + 5000, limit: 10, leaseBaseMs: 60_000, leaseMaxMs: 60_000 })
        assert.deepStrictEqual(later.map((r) => r.rowId), [rows[0]!.rowId])
        assert.strictEqual(later[0]!.attempts, 1)
      }))

    test("reschedule leaves a row claimed more often than maxAttempts with its claimer's lease", (store) =>
      Effect.gen(function*() {
        const [row] = yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        const [claimed] = yield* store.claim({ now: T0, limit: 10, leaseBaseMs: 60_000, leaseMaxMs: 60_000 })
        assert.strictEqual(claimed!.rowId, row!.rowId)
        // A late release of the fast path's row (never claimed) must not make it due again.
        yield* store.reschedule([row!.rowId], T0, "publish queue full", 0)
        assert.deepStrictEqual(yield* store.claim({ now: T0 + 1, limit: 10, leaseBaseMs: 60_000, leaseMaxMs: 60_000 }), [])
        assert.strictEqual((yield* store.claim({ now: T0 + 60_000, limit: 10, leaseBaseMs: 60_000, leaseMaxMs: 60_000 })).length, 1)
      }))
  })

  describe("delete", () => {
    test("deletes the given rows, ignores unknown ids, and counts what it deleted", (store) =>
      Effect.gen(function*() {
        const rows = yield* store.append(range(4).map(() => newEvent("a", "x")), { now: T0, nextAttemptAt: T0 })
        assert.strictEqual(yield* store.delete([]), 0)
        assert.strictEqual(yield* store.delete([rows[0]!.rowId, rows[2]!.rowId, 424_242n]), 2)
        assert.strictEqual(yield* store.delete([rows[0]!.rowId]), 0)
        const left = yield* store.claim({ now: T0, limit: 10, leaseBaseMs: 1, leaseMaxMs: 1 })
        assert.deepStrictEqual(left.map((r) => r.rowId), [rows[1]!.rowId, rows[3]!.rowId])
        assert.strictEqual((yield* store.stats).backlog, 2)
      }))
  })

  describe("expire", () => {
    const setup = (store: Store["Service"]) =>
      Effect.gen(function*() {
        // 25 old rows over two keys, at distinct times, then 5 recent ones
        for (const i of range(25)) {
          yield* store.append([newEvent(i % 2 === 0 ? "a" : "b", "x")], { now: T0 + i, nextAttemptAt: T0 + i })
        }
        yield* store.append(range(5).map(() => newEvent("a", "x")), { now: T0 + 1000, nextAttemptAt: T0 + 1000 })
      })

    test("deletes at most `limit` rows per call, oldest first, counted per source and type", (store) =>
      Effect.gen(function*() {
        yield* setup(store)
        const first = yield* store.expire({ olderThan: T0 + 1000, limit: 10, deadLetter: false, now: T0 + 2000 })
        assert.deepStrictEqual(first, [{ source: "a", type: "x", count: 5 }, { source: "b", type: "x", count: 5 }])
        assert.strictEqual(Option.getOrThrow((yield* store.stats).oldestCreatedAt), T0 + 10)
        let total = 10
        let calls = 1
        while (true) {
          const counts = yield* store.expire({ olderThan: T0 + 1000, limit: 10, deadLetter: false, now: T0 + 2000 })
          const n = counts.reduce((sum, c) => sum + c.count, 0)
          assert.isAtMost(n, 10)
          if (n === 0) break
          total += n
          calls++
        }
        assert.strictEqual(total, 25)
        assert.strictEqual(calls, 3)
        const stats = yield* store.stats
        assert.strictEqual(stats.backlog, 5)
        assert.strictEqual(stats.deadLetters, 0)
        assert.deepStrictEqual(stats.oldestCreatedAt, Option.some(T0 + 1000))
      }))

    test("with deadLetter: moves them to the dead letters with code \"expired\"", (store) =>
      Effect.gen(function*() {
        yield* setup(store)
        const counts = yield* store.expire({ olderThan: T0 + 3, limit: 10, deadLetter: true, now: T0 + 2000 })
        assert.deepStrictEqual(counts, [{ source: "a", type: "x", count: 2 }, { source: "b", type: "x", count: 1 }])
        const dead = yield* store.listDeadLetters({})
        assert.deepStrictEqual(dead.map((d) => [d.source, Number(d.seq), d.createdAt]), [
          ["a", 1, T0],
          ["b", 1, T0 + 1],
          ["a", 2, T0 + 2]
        ])
        for (const d of dead) {
          assert.strictEqual(d.code, "expired")
          assert.strictEqual(d.deadLetteredAt, T0 + 2000)
        }
        assert.strictEqual((yield* store.stats).backlog, 27)
      }))
  })

  describe("dead letters", () => {
    /** Six rows: a/x ×3, b/y ×3, dead-lettered at T0+100, +200, +300 (two rows each). */
    const setup = (store: Store["Service"]) =>
      Effect.gen(function*() {
        const rows = yield* store.append(
          [newEvent("a", "x"), newEvent("b", "y"), newEvent("a", "x"), newEvent("b", "y"), newEvent("a", "x"), newEvent("b", "y")],
          { now: T0, nextAttemptAt: T0 }
        )
        for (const [i, at] of [[0, 100], [2, 200], [4, 300]] as const) {
          const moved = yield* store.deadLetter([
            { rowId: rows[i]!.rowId, code: "INVALID_ARGUMENT", reason: `bad ${i}` },
            { rowId: rows[i + 1]!.rowId, code: "PERMISSION_DENIED", reason: `denied ${i + 1}` }
          ], T0 + at)
          assert.strictEqual(moved, 2)
        }
        return rows
      })

    test("deadLetter moves rows with their code and reason; unknown ids are not counted", (store) =>
      Effect.gen(function*() {
        const rows = yield* store.append([newEvent("a", "x"), newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        assert.strictEqual(yield* store.deadLetter([], T0), 0)
        const moved = yield* store.deadLetter([
          { rowId: rows[0]!.rowId, code: "INVALID_ARGUMENT", reason: "schema mismatch" },
          { rowId: 777_777n, code: "X", reason: "unknown row" }
        ], T0 + 5)
        assert.strictEqual(moved, 1)
        const claimable = yield* store.claim({ now: T0, limit: 10, leaseBaseMs: 1, leaseMaxMs: 1 })
        assert.deepStrictEqual(claimable.map((r) => r.rowId), [rows[1]!.rowId])
        const [dead] = yield* store.listDeadLetters({})
        assert.strictEqual(dead!.rowId, rows[0]!.rowId)
        assert.strictEqual(dead!.eventId, rows[0]!.eventId)
        assert.strictEqual(dead!.seq, 1n)
        assert.strictEqual(dead!.code, "INVALID_ARGUMENT")
        assert.strictEqual(dead!.reason, "schema mismatch")
        assert.strictEqual(dead!.createdAt, T0)
        assert.strictEqual(dead!.deadLetteredAt, T0 + 5)
        assert.strictEqual(dead!.attempts, 0)
        assert.isTrue(dead!.payload.length > 0)
        const stats = yield* store.stats
        assert.strictEqual(stats.backlog, 1)
        assert.strictEqual(stats.deadLetters, 1)
      }))

    test("listDeadLetters filters by source, type, time range and limit", (store) =>
      Effect.gen(function*() {
        const rows = yield* setup(store)
        const ids = (filter: Parameters<Store["Service"]["listDeadLetters"]>[0]) =>
          store.listDeadLetters(filter).pipe(Effect.map((dead) => dead.map((d) => rows.findIndex((r) => r.rowId === d.rowId))))
        assert.deepStrictEqual(yield* ids({}), [0, 1, 2, 3, 4, 5])
        assert.deepStrictEqual(yield* ids({ source: "a" }), [0, 2, 4])
        assert.deepStrictEqual(yield* ids({ type: "y" }), [1, 3, 5])
        assert.deepStrictEqual(yield* ids({ source: "a", type: "y" }), [])
        assert.deepStrictEqual(yield* ids({ since: T0 + 200 }), [2, 3, 4, 5])
        assert.deepStrictEqual(yield* ids({ until: T0 + 200 }), [0, 1])
        assert.deepStrictEqual(yield* ids({ since: T0 + 150, until: T0 + 300, source: "b" }), [3])
        assert.deepStrictEqual(yield* ids({ limit: 3 }), [0, 1, 2])
        assert.deepStrictEqual(yield* ids({ source: "b", limit: 2 }), [1, 3])
      }))

    test("replay puts rows back with the same ids and seqs, due now, and removes them from the dead letters", (store) =>
      Effect.gen(function*() {
        const rows = yield* setup(store)
        const replayed = yield* store.replayDeadLetters({ source: "a", until: T0 + 300 }, T0 + 1000)
        assert.strictEqual(replayed, 2)
        assert.deepStrictEqual(
          (yield* store.listDeadLetters({})).map((d) => d.rowId),
          [rows[1]!.rowId, rows[3]!.rowId, rows[4]!.rowId, rows[5]!.rowId]
        )
        assert.deepStrictEqual(yield* store.claim({ now: T0 + 999, limit: 10, leaseBaseMs: 1, leaseMaxMs: 1 }), [])
        const back = yield* store.claim({ now: T0 + 1000, limit: 10, leaseBaseMs: 1, leaseMaxMs: 1 })
        assert.deepStrictEqual(
          back.map((r) => [r.rowId, r.eventId, r.seq]),
          [0, 2].map((i) => [rows[i]!.rowId, rows[i]!.eventId, rows[i]!.seq])
        )
        assert.deepStrictEqual(back.map((r) => r.seq), [1n, 2n])
        // attempts and the time to live start over
        assert.deepStrictEqual(back.map((r) => [r.attempts, r.createdAt]), [[1, T0 + 1000], [1, T0 + 1000]])
        assert.strictEqual(yield* store.replayDeadLetters({ limit: 1 }, T0 + 1000), 1)
        assert.strictEqual((yield* store.stats).deadLetters, 3)
        // the sequence carries on after the replayed numbers
        const [next] = yield* store.append([newEvent("a", "x")], { now: T0, nextAttemptAt: T0 })
        assert.strictEqual(next!.seq, 4n)
      }))

    test("purge deletes matching dead letters, bounded by limit", (store) =>
      Effect.gen(function*() {
        yield* setup(store)
        assert.strictEqual(yield* store.purgeDeadLetters({ type: "y", since: T0 + 200 }), 2)
        assert.strictEqual(yield* store.purgeDeadLetters({ type: "y", since: T0 + 200 }), 0)
        assert.strictEqual(yield* store.purgeDeadLetters({ limit: 1 }), 1)
        const left = yield* store.listDeadLetters({})
        assert.deepStrictEqual(left.map((d) => [d.source, d.deadLetteredAt]), [
          ["b", T0 + 100],
          ["a", T0 + 200],
          ["a", T0 + 300]
        ])
        assert.strictEqual(yield* store.purgeDeadLetters({}), 3)
        assert.strictEqual((yield* store.stats).deadLetters, 0)
        assert.strictEqual((yield* store.stats).backlog, 0)
      }))
  })

  describe("inspection", () => {
    test("stats: backlog, oldest row, payload bytes, dead letters", (store) =>
      Effect.gen(function*() {
        // the counts exactly; the storage figures depend on the implementation (see `storage`)
        const counts = Effect.map(store.stats, ({ deadTuples: _, tableBytes: __, ...counts }) => counts)
        assert.deepStrictEqual(yield* counts, {
          backlog: 0,
          oldestCreatedAt: Option.none(),
          payloadBytes: 0,
          deadLetters: 0,
          exact: true
        })
        const rows = yield* store.append(
          [newEvent("a", "x", new Uint8Array(10)), newEvent("a", "x", new Uint8Array(20))],
          { now: T0 + 50, nextAttemptAt: T0 }
        )
        yield* store.append([newEvent("b", "x", new Uint8Array(300))], { now: T0 + 7, nextAttemptAt: T0 })
        yield* store.deadLetter([{ rowId: rows[0]!.rowId, code: "X", reason: "y" }], T0)
        assert.deepStrictEqual(yield* counts, {
          backlog: 2,
          oldestCreatedAt: Option.some(T0 + 7),
          payloadBytes: 320,
          deadLetters: 1,
          exact: true
        })
      }))

    test("stats: the events table's storage holds at least its payloads; dead tuples are a count", (store) =>
      Effect.gen(function*() {
        yield* store.append([newEvent("a", "x", new Uint8Array(1000)), newEvent("a", "x", new Uint8Array(2000))], {
          now: T0,
          nextAttemptAt: T0
        })
        const stats = yield* store.stats
        assert.isAtLeast(stats.tableBytes, stats.payloadBytes)
        assert.isAtLeast(stats.payloadBytes, 3000)
        assert.isTrue(Number.isSafeInteger(stats.deadTuples) && stats.deadTuples >= 0, String(stats.deadTuples))
      }))

    test("countBySourceType: backlog per source and type with its oldest row", (store) =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* store.countBySourceType, [])
        yield* store.append([newEvent("b", "x"), newEvent("a", "y")], { now: T0 + 5, nextAttemptAt: T0 })
        yield* store.append([newEvent("a", "y"), newEvent("a", "x")], { now: T0 + 1, nextAttemptAt: T0 })
        assert.deepStrictEqual(yield* store.countBySourceType, [
          { source: "a", type: "x", count: 1, oldestCreatedAt: T0 + 1 },
          { source: "a", type: "y", count: 2, oldestCreatedAt: T0 + 1 },
          { source: "b", type: "x", count: 1, oldestCreatedAt: T0 + 5 }
        ])
      }))
  })
}
