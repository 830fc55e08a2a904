/**
 * `append` on PostgreSQL: one statement per batch that takes each (source, type)'s next seqs and
 * inserts the rows. The sequences rows are locked in (source, type) order, so concurrent appends
 * over the same keys cannot deadlock; each row lock is held until commit, so numbers follow
 * commit order per key. Which row is whose is decided by `appendPlacement.ts`, never by the
 * order rows come back in.
 */
import { Effect } from "effect"
import { StoreError } from "../Errors.ts"
import type { Appended, NewEvent } from "../Store.ts"
import { firstUnplaced, isOneKey, type KeyNumbering, numberByKey, placeByKey, placeOneKey } from "./appendPlacement.ts"
import { currentSlot } from "./pgPartitions.ts"
import { type Runner, statement, toBigInt, ts } from "./pgStatement.ts"
import type { Tables } from "./pgSchema.ts"

export interface AppendOptions {
  readonly now: number
  readonly nextAttemptAt: number
}

interface Batch {
  readonly events: ReadonlyArray<NewEvent>
  readonly options: AppendOptions
}

/**
 * A batch whose events all share one (source, type): one row to lock and no join. Event i (from
 * 1) gets seq = last - count + i.
 */
const appendOneKey = (t: Tables) =>
  statement({
    operation: "append",
    params: ["eventIds", "source", "type", "payloads", "now", "nextAttemptAt", "count"],
    columns: { id: "id", seq: "seq" },
    text: (p, columns) => `
      WITH s AS (
        INSERT INTO ${t.sequences} AS s (source, type, last) VALUES (${p.source}, ${p.type}, ${p.count})
        ON CONFLICT (source, type) DO UPDATE SET last = s.last + EXCLUDED.last
        RETURNING s.last
      )
      INSERT INTO ${t.events} (slot, source, type, seq, event_id, payload, created_at, next_attempt_at)
      SELECT ${currentSlot(t)}, ${p.source}, ${p.type}, s.last - ${p.count} + i.ord, i.event_id, i.payload, ${ts(p.now)}, ${
      ts(p.nextAttemptAt)
    }
      FROM s, unnest(${p.eventIds}::text[], ${p.payloads}::bytea[]) WITH ORDINALITY AS i(event_id, payload, ord)
      RETURNING ${columns}`,
    bind: ({ events, options }: Batch) => ({
      eventIds: events.map((e) => e.eventId),
      source: events[0]!.source,
      type: events[0]!.type,
      payloads: events.map((e) => e.payload),
      now: options.now,
      nextAttemptAt: options.nextAttemptAt,
      count: events.length
    }),
    decode: (row, c) => ({ rowId: toBigInt(row[c.id]), seq: toBigInt(row[c.seq]) })
  })

/**
 * Several keys: the caller numbers the events within their keys (`numberByKey`): each event's
 * key (an index into the key arrays, from 1) and rank within it; the statement adds each key's
 * last seq.
 */
const appendKeys = (t: Tables) =>
  statement({
    operation: "append",
    params: [
      "eventIds",
      "payloads",
      "keyOf",
      "keySources",
      "keyTypes",
      "keyCounts",
      "rank",
      "now",
      "nextAttemptAt"
    ],
    columns: { id: "id", source: "source", type: "type", seq: "seq" },
    text: (p, columns) => `
      WITH k AS (
        SELECT * FROM unnest(${p.keySources}::text[], ${p.keyTypes}::text[], ${p.keyCounts}::int8[])
          WITH ORDINALITY AS k(source, type, n, key)
      ),
      s AS (
        INSERT INTO ${t.sequences} AS s (source, type, last)
        SELECT source, type, n FROM k ORDER BY source, type
        ON CONFLICT (source, type) DO UPDATE SET last = s.last + EXCLUDED.last
        RETURNING s.source, s.type, s.last
      ),
      b AS (
        SELECT k.key, k.source, k.type, s.last - k.n AS base FROM k JOIN s ON s.source = k.source AND s.type = k.type
      )
      INSERT INTO ${t.events} (slot, source, type, seq, event_id, payload, created_at, next_attempt_at)
      SELECT ${currentSlot(t)}, b.source, b.type, b.base + i.rank, i.event_id, i.payload, ${ts(p.now)}, ${ts(p.nextAttemptAt)}
      FROM unnest(${p.eventIds}::text[], ${p.payloads}::bytea[], ${p.keyOf}::int4[], ${p.rank}::int4[])
        AS i(event_id, payload, key, rank)
      JOIN b ON b.key = i.key
      RETURNING ${columns}`,
    bind: ({ events, numbering, options }: Batch & { readonly numbering: KeyNumbering }) => ({
      eventIds: events.map((e) => e.eventId),
      payloads: events.map((e) => e.payload),
      keyOf: numbering.keyOf,
      keySources: numbering.keys.map((k) => k.source),
      keyTypes: numbering.keys.map((k) => k.type),
      keyCounts: numbering.keys.map((k) => k.events.length),
      rank: numbering.rank,
      now: options.now,
      nextAttemptAt: options.nextAttemptAt
    }),
    decode: (row, c) => ({
      rowId: toBigInt(row[c.id]),
      source: row[c.source] as string,
      type: row[c.type] as string,
      seq: toBigInt(row[c.seq])
    })
  })

export const makeAppend = (runner: Runner, t: Tables) => {
  const oneKey = appendOneKey(t)
  const keys = appendKeys(t)

  /** Each event's row (`undefined` where none came back), and how many rows the commit wrote. */
  const placed = (batch: Batch) => {
    if (isOneKey(batch.events)) {
      return Effect.map(runner.run(oneKey, batch), (rows) => ({ rows: rows.length, placed: placeOneKey(batch.events.length, rows) }))
    }
    const numbering = numberByKey(batch.events)
    return Effect.map(runner.run(keys, { ...batch, numbering }), (rows) => ({ rows: rows.length, placed: placeByKey(numbering, rows) }))
  }

  return Effect.fn("PgStore.append")(function*(events: ReadonlyArray<NewEvent>, options: AppendOptions) {
    if (events.length === 0) return []
    const { placed: rows, rows: written } = yield* placed({ events, options })
    const missing = firstUnplaced(rows)
    if (missing >= 0) {
      // Cannot happen unless the statement is broken; the rows are committed, so say so.
      return yield* new StoreError({
        operation: "append",
        reason: `committed ${written} rows for ${events.length} events but found no answer for event ${missing}`,
        retryable: false
      })
    }
    return rows.map((row, i): Appended => ({ rowId: row!.rowId, eventId: events[i]!.eventId, seq: row!.seq }))
  })
}
