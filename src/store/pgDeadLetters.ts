/**
 * The dead-letter table: rows moved there with a code and a reason (atomically: one statement
 * deletes from the events table and inserts here), listed, replayed under their old id and seq,
 * purged. The list, replay and purge texts depend on the filter, so those are built per call.
 */
import { Effect } from "effect"
import type { DeadLetter, DeadLetterEntry, DeadLetterFilter } from "../Store.ts"
import { currentSlot } from "./pgPartitions.ts"
import { decodeEvent, eventColumns, ms, resultColumns, type Row, type Runner, statement, toNumber, ts } from "./pgStatement.ts"
import type { Tables } from "./pgSchema.ts"

/** The dead-letter table's columns, in the order every insert into it lists them. */
export const deadLetterColumns =
  "id, source, type, seq, event_id, payload, created_at, next_attempt_at, attempts, last_error, dead_lettered_at, code, reason"

const moveStatement = (t: Tables) =>
  statement({
    operation: "deadLetter",
    params: ["ids", "codes", "reasons", "now"],
    columns: { count: "count(*)" },
    text: (p, columns) => `
      WITH input AS (
        SELECT * FROM unnest(${p.ids}::int8[], ${p.codes}::text[], ${p.reasons}::text[]) AS i(id, code, reason)
      ),
      moved AS (
        -- The ANY lets the planner find the rows by the id index rather than join the heaps.
        DELETE FROM ${t.events} e USING input i WHERE e.id = i.id AND e.id = ANY(${p.ids}::int8[])
        RETURNING e.*, i.code AS dl_code, i.reason AS dl_reason
      ),
      inserted AS (
        INSERT INTO ${t.deadLetters} (${deadLetterColumns})
        SELECT id, source, type, seq, event_id, payload, created_at, next_attempt_at, attempts, last_error,
          ${ts(p.now)}, dl_code, dl_reason
        FROM moved
        ON CONFLICT (id) DO UPDATE SET dead_lettered_at = EXCLUDED.dead_lettered_at, code = EXCLUDED.code,
          reason = EXCLUDED.reason
        RETURNING 1
      )
      SELECT ${columns} FROM inserted`,
    bind: ({ entries, now }: { readonly entries: ReadonlyArray<DeadLetterEntry>; readonly now: number }) => ({
      ids: entries.map((entry) => entry.rowId),
      codes: entries.map((entry) => entry.code),
      reasons: entries.map((entry) => entry.reason),
      now
    }),
    decode: (row, c) => toNumber(row[c.count])
  })

/** What `listDeadLetters` reads. */
const listed = resultColumns({
  ...eventColumns,
  dead_lettered_at: ms("dead_lettered_at"),
  attempts: "attempts",
  code: "code",
  reason: "reason"
})

const decodeListed = (row: Row): DeadLetter => {
  const c = listed.at
  return {
    ...decodeEvent(row, c),
    deadLetteredAt: toNumber(row[c.dead_lettered_at]),
    attempts: toNumber(row[c.attempts]),
    code: row[c.code] as string,
    reason: row[c.reason] as string
  }
}

/** WHERE clause and parameters of a dead-letter filter, parameters numbered from `$1`. */
export const deadLetterWhere = (filter: DeadLetterFilter) => {
  const conditions: Array<string> = []
  const params: Array<unknown> = []
  const param = (value: unknown) => {
    params.push(value)
    return `$${params.length}`
  }
  if (filter.source !== undefined) conditions.push(`source = ${param(filter.source)}`)
  if (filter.type !== undefined) conditions.push(`type = ${param(filter.type)}`)
  if (filter.since !== undefined) conditions.push(`dead_lettered_at >= ${ts(param(filter.since))}`)
  if (filter.until !== undefined) conditions.push(`dead_lettered_at < ${ts(param(filter.until))}`)
  const where = conditions.length === 0 ? "" : `WHERE ${conditions.join(" AND ")}`
  const limit = filter.limit === undefined ? "" : `LIMIT ${param(Math.max(0, Math.floor(filter.limit)))}`
  return { where, limit, params, param }
}

const firstCount = (rows: ReadonlyArray<Row>) => toNumber(rows[0]?.[0] ?? 0)

export const makeDeadLetterOperations = (runner: Runner, t: Tables) => {
  const move = moveStatement(t)

  const deadLetter = Effect.fn("PgStore.deadLetter")(function*(entries: ReadonlyArray<DeadLetterEntry>, now: number) {
    if (entries.length === 0) return 0
    const unique = new Map<bigint, DeadLetterEntry>()
    for (const entry of entries) if (!unique.has(entry.rowId)) unique.set(entry.rowId, entry)
    const [moved] = yield* runner.run(move, { entries: Array.from(unique.values()), now })
    return moved ?? 0
  })

  const listDeadLetters = Effect.fn("PgStore.listDeadLetters")(function*(filter: DeadLetterFilter) {
    const { limit, params, where } = deadLetterWhere(filter)
    const rows = yield* runner.runText(
      "listDeadLetters",
      `SELECT ${listed.list} FROM ${t.deadLetters} ${where} ORDER BY dead_lettered_at, id ${limit}`,
      params
    )
    return rows.map(decodeListed)
  })

  /** Rows come back under their old id, seq and event id; their TTL and attempts start over. */
  const replayDeadLetters = Effect.fn("PgStore.replayDeadLetters")(function*(filter: DeadLetterFilter, now: number) {
    const { limit, param, params, where } = deadLetterWhere(filter)
    const at = ts(param(now))
    const rows = yield* runner.runText(
      "replayDeadLetters",
      `WITH picked AS (
         SELECT id FROM ${t.deadLetters} ${where} ORDER BY dead_lettered_at, id ${limit} FOR UPDATE SKIP LOCKED
       ),
       moved AS (
         DELETE FROM ${t.deadLetters} d USING picked p WHERE d.id = p.id RETURNING d.*
       ),
       inserted AS (
         INSERT INTO ${t.events} (id, slot, source, type, seq, event_id, payload, created_at, next_attempt_at, attempts)
         SELECT id, ${currentSlot(t)}, source, type, seq, event_id, payload, ${at}, ${at}, 0 FROM moved
         RETURNING 1
       )
       SELECT count(*) FROM inserted`,
      params
    )
    return firstCount(rows)
  })

  const purgeDeadLetters = Effect.fn("PgStore.purgeDeadLetters")(function*(filter: DeadLetterFilter) {
    const { limit, params, where } = deadLetterWhere(filter)
    const rows = yield* runner.runText(
      "purgeDeadLetters",
      `WITH d AS (
         DELETE FROM ${t.deadLetters} WHERE id IN (
           SELECT id FROM ${t.deadLetters} ${where} ORDER BY dead_lettered_at, id ${limit} FOR UPDATE SKIP LOCKED)
         RETURNING 1
       )
       SELECT count(*) FROM d`,
      params
    )
    return firstCount(rows)
  })

  return { deadLetter, listDeadLetters, replayDeadLetters, purgeDeadLetters }
}
