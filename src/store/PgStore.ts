/**
 * The PostgreSQL Store, on `@effect/sql-pg`. Every operation is one SQL statement (its own
 * transaction); arrays travel as one parameter per column, so a batch of any size is one
 * statement with a fixed text, prepared once per connection.
 *
 * Times are epoch milliseconds from the caller's Clock: written with `to_timestamp(ms / 1000)`
 * (exact to the microsecond) and read back as `extract(epoch) * 1000`, so they round-trip exactly.
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Option, type Redacted } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import { InvalidConfig, StoreError } from "../Errors.ts"
import {
  type Appended,
  type ClaimOptions,
  type DeadLetter,
  type DeadLetterEntry,
  type DeadLetterFilter,
  type ExpireOptions,
  type ExpiredCount,
  type NewEvent,
  type SourceTypeCount,
  Store,
  type StoreStats,
  type StoredEvent
} from "../Store.ts"
import { currentSlot, leafTables } from "./pgPartitions.ts"
import { forkRotation, type RotationOptions, rotationSettings } from "./pgRotation.ts"
import { migrate, tables, type Tables } from "./pgSchema.ts"

export interface PgStoreClientOptions extends RotationOptions {
  /** Prefix of every table and index name; a lower-case SQL identifier. Default `durable_emitter`. */
  readonly tablePrefix?: string | undefined
  /**
   * Upper bound of every Store call, measured on the client (a call that takes longer fails with
   * a retryable StoreError). Default 30 seconds.
   */
  readonly queryTimeout?: Duration.Input | undefined
}

export interface PgStoreOptions extends PgStoreClientOptions {
  readonly url: Redacted.Redacted
  /** Default 10. */
  readonly maxConnections?: number | undefined
  /** Default 10 seconds. */
  readonly connectTimeout?: Duration.Input | undefined
  readonly ssl?: PgClient.PgPoolConfig["ssl"]
  /** Default `durable-emitter`. */
  readonly applicationName?: string | undefined
}

const defaultQueryTimeout = Duration.seconds(30)
const defaultConnectTimeout = Duration.seconds(10)

/** Below this many rows, `stats` counts exactly; above it reads the planner's estimate. */
const exactCountLimit = 100_000

const ts = (param: string) => `to_timestamp(${param}::float8 / 1000)`
const ms = (column: string) => `(extract(epoch FROM ${column}) * 1000)::int8`

const deadLetterColumns =
  "id, source, type, seq, event_id, payload, created_at, next_attempt_at, attempts, last_error, dead_lettered_at, code, reason"

/** Whether every event of the batch has the same (source, type). */
const oneKey = (events: ReadonlyArray<NewEvent>) => {
  const { source, type } = events[0]!
  for (let i = 1; i < events.length; i++) {
    if (events[i]!.source !== source || events[i]!.type !== type) return false
  }
  return true
}

/** The statement texts for one set of tables; built once per layer. */
const statements = (t: Tables) => ({
  /**
   * $1 event ids, $2 payloads, $3 each event's key (an index into $4..$6, from 1), $4 sources,
   * $5 types, $6 events per key, $7 each event's rank within its key (from 1), $8 now, $9 next
   * attempt. The caller numbers the events within their keys; the statement adds each key's last
   * seq. The sequences rows are locked in (source, type) order, so concurrent appends over the
   * same keys cannot deadlock; each row lock is held until commit, so numbers follow commit order
   * per key. The caller maps each returned row to its event by (source, type, seq), never by the
   * order of rows.
   */
  append: `
    WITH k AS (
      SELECT * FROM unnest($4::text[], $5::text[], $6::int8[]) WITH ORDINALITY AS k(source, type, n, key)
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
    SELECT ${currentSlot(t)}, b.source, b.type, b.base + i.rank, i.event_id, i.payload, ${ts("$8")}, ${ts("$9")}
    FROM unnest($1::text[], $2::bytea[], $3::int4[], $7::int4[]) AS i(event_id, payload, key, rank)
    JOIN b ON b.key = i.key
    RETURNING id, source, type, seq`,

  /**
   * The same for a batch whose events all share one (source, type), the common case under load:
   * $1 event ids, $2 source, $3 type, $4 payloads, $5 now, $6 next attempt, $7 count. One row to
   * lock and no join. Event i (from 1) gets seq = last - count + i; the caller maps each returned
   * (id, seq) to its event by seq.
   */
  appendOneKey: `
    WITH s AS (
      INSERT INTO ${t.sequences} AS s (source, type, last) VALUES ($2, $3, $7)
      ON CONFLICT (source, type) DO UPDATE SET last = s.last + EXCLUDED.last
      RETURNING s.last
    )
    INSERT INTO ${t.events} (slot, source, type, seq, event_id, payload, created_at, next_attempt_at)
    SELECT ${currentSlot(t)}, $2, $3, s.last - $7 + i.ord, i.event_id, i.payload, ${ts("$5")}, ${ts("$6")}
    FROM s, unnest($1::text[], $4::bytea[]) WITH ORDINALITY AS i(event_id, payload, ord)
    RETURNING id, seq`,

  delete: `
    WITH d AS (DELETE FROM ${t.events} WHERE id = ANY($1::int8[]) RETURNING 1)
    SELECT count(*) FROM d`,

  /**
   * $1 now, $2 limit, $3 lease base, $4 lease max. The exponent is capped so that a row claimed a
   * thousand times still computes a finite lease.
   */
  claim: `
    WITH due AS (
      SELECT id, next_attempt_at FROM ${t.events}
      WHERE next_attempt_at <= ${ts("$1")}
      ORDER BY next_attempt_at, id
      LIMIT $2
      FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
      UPDATE ${t.events} e SET
        attempts = e.attempts + 1,
        next_attempt_at = to_timestamp(
          ($1::float8 + least($3::float8 * power(2::float8, least(e.attempts, 60)), $4::float8)) / 1000)
      FROM due WHERE e.id = due.id
      RETURNING e.id, e.event_id, e.source, e.type, e.seq, e.payload, ${ms("e.created_at")} AS created_at,
        e.attempts, ${ms("e.next_attempt_at")} AS lease_until, due.next_attempt_at AS due_at
    )
    SELECT id, event_id, source, type, seq, payload, created_at, attempts, lease_until FROM claimed ORDER BY due_at, id`,

  reschedule: `
    UPDATE ${t.events} SET next_attempt_at = ${ts("$2")}, last_error = $3 WHERE id = ANY($1::int8[])`,

  /** $1 older than, $2 limit. */
  expireDelete: `
    WITH doomed AS (
      DELETE FROM ${t.events} WHERE id IN (
        SELECT id FROM ${t.events} WHERE created_at < ${ts("$1")}
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
      RETURNING source, type
    )
    SELECT source, type, count(*) AS count FROM doomed GROUP BY source, type ORDER BY source, type`,

  /** $1 older than, $2 limit, $3 now. */
  expireDeadLetter: `
    WITH doomed AS (
      DELETE FROM ${t.events} WHERE id IN (
        SELECT id FROM ${t.events} WHERE created_at < ${ts("$1")}
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
      RETURNING *
    ),
    moved AS (
      INSERT INTO ${t.deadLetters} (${deadLetterColumns})
      SELECT id, source, type, seq, event_id, payload, created_at, next_attempt_at, attempts, last_error,
        ${ts("$3")}, 'expired', 'not delivered before its time to live ran out'
      FROM doomed
      ON CONFLICT (id) DO UPDATE SET dead_lettered_at = EXCLUDED.dead_lettered_at, code = EXCLUDED.code,
        reason = EXCLUDED.reason
    )
    SELECT source, type, count(*) AS count FROM doomed GROUP BY source, type ORDER BY source, type`,

  /** $1 row ids, $2 codes, $3 reasons, $4 now. */
  deadLetter: `
    WITH input AS (
      SELECT * FROM unnest($1::int8[], $2::text[], $3::text[]) AS i(id, code, reason)
    ),
    moved AS (
      DELETE FROM ${t.events} e USING input i WHERE e.id = i.id
      RETURNING e.*, i.code AS dl_code, i.reason AS dl_reason
    ),
    inserted AS (
      INSERT INTO ${t.deadLetters} (${deadLetterColumns})
      SELECT id, source, type, seq, event_id, payload, created_at, next_attempt_at, attempts, last_error,
        ${ts("$4")}, dl_code, dl_reason
      FROM moved
      ON CONFLICT (id) DO UPDATE SET dead_lettered_at = EXCLUDED.dead_lettered_at, code = EXCLUDED.code,
        reason = EXCLUDED.reason
      RETURNING 1
    )
    SELECT count(*) FROM inserted`,

  stats: `
    WITH ev AS (${estimate(t.events)}),
    dl AS (${estimate(t.deadLetters)}),
    ev_sample AS (
      SELECT octet_length(payload) AS bytes FROM ${t.events}
      WHERE (SELECT est FROM ev) < ${exactCountLimit} LIMIT ${exactCountLimit + 1}
    ),
    dl_sample AS (
      SELECT 1 FROM ${t.deadLetters} WHERE (SELECT est FROM dl) < ${exactCountLimit} LIMIT ${exactCountLimit + 1}
    )
    SELECT
      (SELECT est FROM ev) AS ev_est,
      (SELECT count(*) FROM ev_sample) AS ev_count,
      (SELECT coalesce(sum(bytes), 0)::float8 FROM ev_sample) AS ev_bytes,
      (SELECT avg_width::float8 FROM pg_stats
        WHERE schemaname = current_schema() AND tablename = '${t.events}' AND attname = 'payload') AS ev_width,
      (SELECT sum(pg_table_size(relid))::float8 FROM (${leafTables(t.events)}) leaves) AS ev_size,
      (SELECT ${ms("min(created_at)")} FROM ${t.events}) AS oldest,
      (SELECT est FROM dl) AS dl_est,
      (SELECT count(*) FROM dl_sample) AS dl_count`,

  countBySourceType: `
    SELECT source, type, count(*) AS count, ${ms("min(created_at)")} AS oldest
    FROM ${t.events} GROUP BY source, type ORDER BY source, type`
})

/**
 * The planner's row estimate, scaled to the table's current size the way the planner does it
 * (reltuples / relpages * current pages), summed over the partitions; -1 when a partition that
 * holds pages was never analyzed (a truncated partition starts over as never analyzed).
 */
const estimate = (table: string) => `
  SELECT (CASE
    WHEN bool_or(c.reltuples < 0 AND pg_relation_size(c.oid) > 0) THEN -1
    ELSE coalesce(sum(CASE
      WHEN c.relpages > 0
        THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::float8)
      ELSE greatest(c.reltuples, 0) END), 0) END)::float8 AS est
  FROM pg_class c WHERE c.oid IN (${leafTables(table)})`

/** WHERE clause and parameters of a dead-letter filter, parameters numbered from `$1`. */
const deadLetterWhere = (filter: DeadLetterFilter) => {
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

/** The driver's own message when it says more, e.g. "connect ECONNREFUSED 127.0.0.1:5432". */
const underlying = (error: SqlError): string => {
  const cause: unknown = error.reason.cause
  return cause instanceof Error && cause.message !== "" && !error.message.includes(cause.message) ? `: ${cause.message}` : ""
}

const toStoreError = (operation: string) => (error: SqlError): StoreError =>
  new StoreError({ operation, reason: `${error.reason._tag}: ${error.message}${underlying(error)}`, retryable: error.isRetryable })

/**
 * The driver decodes bytea as a view into the message it received. Rows outlive the query (they
 * wait in the publish queue), so each payload gets its own copy: a view would pin the whole
 * message buffer in memory.
 */
const ownBytes = (value: unknown): Uint8Array => (value as Uint8Array).slice()

const toNumber = (value: unknown): number => typeof value === "number" ? value : Number(value)

/**
 * The Store on an SqlClient from the context, which must speak PostgreSQL (sql-pg, or PGlite
 * through sql-pg's `stream` option). Runs the migrations when built.
 */
export const make = Effect.fnUntraced(function*(options: PgStoreClientOptions & { readonly serverTimeout?: boolean }) {
  const t = yield* tables(options.tablePrefix)
  const queryTimeout = yield* durationOption("queryTimeout", options.queryTimeout, defaultQueryTimeout)
  const rotation = yield* rotationSettings(options)
  const sql = yield* SqlClient.SqlClient
  yield* migrate(sql, t).pipe(Effect.mapError(toStoreError("migrate")))
  yield* forkRotation(sql, t, rotation)

  const text = statements(t)
  // With a server-side statement_timeout, leave the server a moment to answer first: its error
  // says more than ours.
  const clientTimeout = options.serverTimeout ? Duration.sum(queryTimeout, Duration.seconds(1)) : queryTimeout
  const guard = (operation: string) => <A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A, StoreError> =>
    effect.pipe(
      Effect.mapError(toStoreError(operation)),
      Effect.timeoutOrElse({
        duration: clientTimeout,
        orElse: () =>
          Effect.fail(
            new StoreError({
              operation,
              reason: `no answer within ${Duration.format(clientTimeout)}`,
              retryable: true
            })
          )
      })
    )

  type AppendOptions = { readonly now: number; readonly nextAttemptAt: number }
  /** Rows of a committed batch, each placed at its event's index (`undefined` where none came back). */
  type Placed = { readonly rows: number; readonly appended: Array<Appended | undefined> }

  /** One (source, type): the batch's seqs are consecutive, so each row's seq says whose it is. */
  const appendOneKey = (events: ReadonlyArray<NewEvent>, options: AppendOptions): Effect.Effect<Placed, StoreError> => {
    const { source, type } = events[0]!
    const eventIds = events.map((e) => e.eventId)
    return sql.unsafe(text.appendOneKey, [
      eventIds, source, type, events.map((e) => e.payload), options.now, options.nextAttemptAt, events.length
    ]).values.pipe(
      guard("append"),
      Effect.map((rows) => {
        const appended = new Array<Appended | undefined>(events.length)
        let lowest = rows.length > 0 ? rows[0]![1] as bigint : 0n
        for (const row of rows) if ((row[1] as bigint) < lowest) lowest = row[1] as bigint
        for (const row of rows) {
          const index = Number((row[1] as bigint) - lowest)
          if (index < events.length) appended[index] = { rowId: row[0] as bigint, eventId: eventIds[index]!, seq: row[1] as bigint }
        }
        return { rows: rows.length, appended }
      })
    )
  }

  /**
   * Several keys: events are numbered within their keys here and the statement adds each key's
   * last seq; a row's (source, type, seq) says whose it is.
   */
  const appendKeys = (events: ReadonlyArray<NewEvent>, options: AppendOptions): Effect.Effect<Placed, StoreError> => {
    const keyName = (source: string, type: string) => `${source}\u0000${type}`
    const keys = new Map<string, { index: number; source: string; type: string; events: Array<number>; lowest?: bigint }>()
    const keyOf = new Array<number>(events.length)
    const rank = new Array<number>(events.length)
    events.forEach(({ source, type }, i) => {
      const name = keyName(source, type)
      let key = keys.get(name)
      if (key === undefined) keys.set(name, key = { index: keys.size + 1, source, type, events: [] })
      key.events.push(i)
      keyOf[i] = key.index
      rank[i] = key.events.length
    })
    const list = [...keys.values()]
    return sql.unsafe(text.append, [
      events.map((e) => e.eventId), events.map((e) => e.payload), keyOf,
      list.map((k) => k.source), list.map((k) => k.type), list.map((k) => k.events.length),
      rank, options.now, options.nextAttemptAt
    ]).values.pipe(
      guard("append"),
      Effect.map((rows) => {
        // A key's seqs are consecutive and its lowest is its first event's.
        const rowKeys = rows.map((row) => keys.get(keyName(row[1] as string, row[2] as string)))
        rows.forEach((row, r) => {
          const key = rowKeys[r]
          if (key !== undefined && (key.lowest === undefined || (row[3] as bigint) < key.lowest)) key.lowest = row[3] as bigint
        })
        const appended = new Array<Appended | undefined>(events.length)
        rows.forEach((row, r) => {
          const key = rowKeys[r]
          const index = key?.events[Number((row[3] as bigint) - key.lowest!)]
          if (index !== undefined) appended[index] = { rowId: row[0] as bigint, eventId: events[index]!.eventId, seq: row[3] as bigint }
        })
        return { rows: rows.length, appended }
      })
    )
  }

  const append = Effect.fn("PgStore.append")(function*(events: ReadonlyArray<NewEvent>, options: AppendOptions) {
    const n = events.length
    if (n === 0) return []
    const { appended, rows } = yield* (oneKey(events) ? appendOneKey(events, options) : appendKeys(events, options))
    for (let i = 0; i < n; i++) {
      if (appended[i] === undefined) {
        // Cannot happen unless the statement is broken; the rows are committed, so say so.
        return yield* new StoreError({
          operation: "append",
          reason: `committed ${rows} rows for ${n} events but found no answer for event ${i}`,
          retryable: false
        })
      }
    }
    return appended as Array<Appended>
  })

  const delete_ = Effect.fn("PgStore.delete")(function*(rowIds: ReadonlyArray<bigint>) {
    if (rowIds.length === 0) return 0
    const rows = yield* sql.unsafe(text.delete, [rowIds]).values.pipe(guard("delete"))
    return toNumber(rows[0]?.[0] ?? 0)
  })

  const claim = Effect.fn("PgStore.claim")(function*(options: ClaimOptions) {
    if (options.limit <= 0) return []
    const rows = yield* sql.unsafe(text.claim, [options.now, Math.floor(options.limit), options.leaseBaseMs, options.leaseMaxMs])
      .values.pipe(guard("claim"))
    return rows.map((row): StoredEvent => ({
      rowId: row[0] as bigint,
      eventId: row[1] as string,
      source: row[2] as string,
      type: row[3] as string,
      seq: row[4] as bigint,
      payload: ownBytes(row[5]),
      createdAt: toNumber(row[6]),
      attempts: toNumber(row[7]),
      leaseUntil: toNumber(row[8])
    }))
  })

  const reschedule = Effect.fn("PgStore.reschedule")(function*(
    rowIds: ReadonlyArray<bigint>,
    nextAttemptAt: number,
    error: string
  ) {
    if (rowIds.length === 0) return
    yield* sql.unsafe(text.reschedule, [rowIds, nextAttemptAt, error]).values.pipe(guard("reschedule"))
  })

  const expire = Effect.fn("PgStore.expire")(function*(options: ExpireOptions) {
    if (options.limit <= 0) return []
    const rows = yield* (options.deadLetter
      ? sql.unsafe(text.expireDeadLetter, [options.olderThan, Math.floor(options.limit), options.now])
      : sql.unsafe(text.expireDelete, [options.olderThan, Math.floor(options.limit)])).values.pipe(guard("expire"))
    return rows.map((row): ExpiredCount => ({
      source: row[0] as string,
      type: row[1] as string,
      count: toNumber(row[2])
    }))
  })

  const deadLetter = Effect.fn("PgStore.deadLetter")(function*(entries: ReadonlyArray<DeadLetterEntry>, now: number) {
    if (entries.length === 0) return 0
    const unique = new Map<bigint, DeadLetterEntry>()
    for (const entry of entries) if (!unique.has(entry.rowId)) unique.set(entry.rowId, entry)
    const list = Array.from(unique.values())
    const rows = yield* sql.unsafe(text.deadLetter, [
      list.map((entry) => entry.rowId),
      list.map((entry) => entry.code),
      list.map((entry) => entry.reason),
      now
    ]).values.pipe(guard("deadLetter"))
    return toNumber(rows[0]?.[0] ?? 0)
  })

  const listDeadLetters = Effect.fn("PgStore.listDeadLetters")(function*(filter: DeadLetterFilter) {
    const { limit, params, where } = deadLetterWhere(filter)
    const rows = yield* sql.unsafe(
      `SELECT id, event_id, source, type, seq, payload, ${ms("created_at")}, ${ms("dead_lettered_at")},
         attempts, code, reason
       FROM ${t.deadLetters} ${where} ORDER BY dead_lettered_at, id ${limit}`,
      params
    ).values.pipe(guard("listDeadLetters"))
    return rows.map((row): DeadLetter => ({
      rowId: row[0] as bigint,
      eventId: row[1] as string,
      source: row[2] as string,
      type: row[3] as string,
      seq: row[4] as bigint,
      payload: ownBytes(row[5]),
      createdAt: toNumber(row[6]),
      deadLetteredAt: toNumber(row[7]),
      attempts: toNumber(row[8]),
      code: row[9] as string,
      reason: row[10] as string
    }))
  })

  /** Rows come back under their old id, seq and event id; their TTL and attempts start over. */
  const replayDeadLetters = Effect.fn("PgStore.replayDeadLetters")(function*(filter: DeadLetterFilter, now: number) {
    const { limit, param, params, where } = deadLetterWhere(filter)
    const at = ts(param(now))
    const rows = yield* sql.unsafe(
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
    ).values.pipe(guard("replayDeadLetters"))
    return toNumber(rows[0]?.[0] ?? 0)
  })

  const purgeDeadLetters = Effect.fn("PgStore.purgeDeadLetters")(function*(filter: DeadLetterFilter) {
    const { limit, params, where } = deadLetterWhere(filter)
    const rows = yield* sql.unsafe(
      `WITH d AS (
         DELETE FROM ${t.deadLetters} WHERE id IN (
           SELECT id FROM ${t.deadLetters} ${where} ORDER BY dead_lettered_at, id ${limit} FOR UPDATE SKIP LOCKED)
         RETURNING 1
       )
       SELECT count(*) FROM d`,
      params
    ).values.pipe(guard("purgeDeadLetters"))
    return toNumber(rows[0]?.[0] ?? 0)
  })

  /**
   * Rows in a table whose statistics are missing or stale: the density of the first rows a
   * sequential scan meets (rows per page), times the table's current pages. Bounded like the
   * sample it repeats; only runs when that sample hit its limit.
   */
  const densityEstimate = (table: string) =>
    sql.unsafe(
      `SELECT count(*)::float8 / count(DISTINCT (tableoid, (ctid::text::point)[0]))
         * ((SELECT sum(pg_relation_size(relid)) FROM (${leafTables(table)}) leaves) / current_setting('block_size')::float8)
       FROM (SELECT tableoid, ctid FROM ${table} LIMIT ${exactCountLimit + 1}) s`
    ).values.pipe(guard("stats"), Effect.map((rows) => Math.round(toNumber(rows[0]?.[0] ?? 0))))

  const stats = Effect.gen(function*() {
    const rows = yield* sql.unsafe(text.stats).values.pipe(guard("stats"))
    const [evEst, evCount, evBytes, evWidth, evSize, oldest, dlEst, dlCount] = (rows[0] ?? []).map((value) =>
      value === null ? null : toNumber(value)
    )
    // Small tables are counted (bounded by the sample's LIMIT); large ones, or a sample that hit
    // its limit because the statistics are stale or missing, take the planner's estimate.
    const counted = Effect.fnUntraced(function*(
      table: string,
      est: number | null | undefined,
      count: number | null | undefined
    ) {
      if (est != null && est >= exactCountLimit) return { value: Math.round(est), exact: false }
      const n = count ?? 0
      if (n <= exactCountLimit) return { value: n, exact: true }
      return { value: Math.max(n, yield* densityEstimate(table)), exact: false }
    })
    const backlog = yield* counted(t.events, evEst, evCount)
    const deadLetters = yield* counted(t.deadLetters, dlEst, dlCount)
    const payloadBytes = backlog.exact
      ? evBytes ?? 0
      : (evCount ?? 0) > 0
      ? Math.round(backlog.value * (evBytes ?? 0) / (evCount ?? 1))
      : evWidth != null
      ? Math.round(backlog.value * evWidth)
      : evSize ?? 0
    return {
      backlog: backlog.value,
      oldestCreatedAt: oldest == null ? Option.none() : Option.some(oldest),
      payloadBytes,
      deadLetters: deadLetters.value,
      exact: backlog.exact && deadLetters.exact
    } satisfies StoreStats
  }).pipe(Effect.withSpan("PgStore.stats"))

  const countBySourceType = sql.unsafe(text.countBySourceType).values.pipe(
    guard("countBySourceType"),
    Effect.map((rows) =>
      rows.map((row): SourceTypeCount => ({
        source: row[0] as string,
        type: row[1] as string,
        count: toNumber(row[2]),
        oldestCreatedAt: toNumber(row[3])
      }))
    ),
    Effect.withSpan("PgStore.countBySourceType")
  )

  return Store.of({
    append,
    delete: delete_,
    claim,
    reschedule,
    expire,
    deadLetter,
    listDeadLetters,
    replayDeadLetters,
    purgeDeadLetters,
    stats,
    countBySourceType
  })
})

const durationOption = (option: string, input: Duration.Input | undefined, fallback: Duration.Duration) => {
  if (input === undefined) return Effect.succeed(fallback)
  const decoded = Duration.fromInput(input)
  return Option.isSome(decoded) && Duration.toMillis(decoded.value) > 0 && Duration.isFinite(decoded.value)
    ? Effect.succeed(decoded.value)
    : Effect.fail(new InvalidConfig({ option, rule: "must be a positive, finite duration" }))
}

/** The Store on the SqlClient in the context (sql-pg, or PGlite through sql-pg). */
export const layerFromClient = (
  options: PgStoreClientOptions = {}
): Layer.Layer<Store, InvalidConfig | StoreError, SqlClient.SqlClient> => Layer.effect(Store, make(options))

/**
 * The Store with its own connection pool. Every session gets `statement_timeout` (the query
 * timeout) and `idle_in_transaction_session_timeout`, so the server bounds every statement too.
 */
export const layer = (options: PgStoreOptions): Layer.Layer<Store, InvalidConfig | StoreError> =>
  Layer.unwrap(Effect.gen(function*() {
    yield* tables(options.tablePrefix)
    const queryTimeout = yield* durationOption("queryTimeout", options.queryTimeout, defaultQueryTimeout)
    const connectTimeout = yield* durationOption("connectTimeout", options.connectTimeout, defaultConnectTimeout)
    const maxConnections = options.maxConnections ?? 10
    if (!Number.isInteger(maxConnections) || maxConnections < 1) {
      return yield* new InvalidConfig({ option: "maxConnections", rule: "must be a positive integer" })
    }
    const timeoutMs = String(Math.ceil(Duration.toMillis(queryTimeout)))
    const client = PgClient.layer({
      url: options.url,
      maxConnections,
      connectTimeout,
      ssl: options.ssl,
      applicationName: options.applicationName ?? "durable-emitter",
      startupParameters: {
        statement_timeout: timeoutMs,
        idle_in_transaction_session_timeout: timeoutMs
      }
    })
    return Layer.effect(Store, make({ ...options, serverTimeout: true })).pipe(
      Layer.provide(client),
      Layer.catchTag("SqlError", (error) => Layer.effect(Store, Effect.fail(toStoreError("connect")(error))))
    )
  }))
