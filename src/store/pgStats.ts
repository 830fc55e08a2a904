/**
 * `stats` and `countBySourceType` on PostgreSQL. `stats` is polled every few seconds, so it must
 * stay cheap on a table of millions of rows: small tables are counted exactly (a sample bounded
 * by `exactCountLimit`), large ones, or a sample that hit its limit because the statistics are
 * stale or missing, take the planner's estimate (`backlogCount`, pure).
 */
import { Effect, Option } from "effect"
import type { SourceTypeCount, StoreStats } from "../Store.ts"
import { eventsDeadTuples, eventsTableBytes, leafTables } from "./pgPartitions.ts"
import { ms, type Runner, statement, toNumber } from "./pgStatement.ts"
import type { Tables } from "./pgSchema.ts"

/** Below this many rows, `stats` counts exactly; above it reads the planner's estimate. */
export const exactCountLimit = 100_000

/**
 * The planner's row estimate, scaled to the table's current size the way the planner does it
 * (reltuples / relpages * current pages), summed over the partitions; -1 when a partition that
 * holds pages was never analyzed (a truncated partition starts over as never analyzed).
 * pg_class is read by oid through its index: with autovacuum off it only grows (every rotation's
 * TRUNCATE leaves dead rows), and `IN (…)` was planned as a sequential scan of all of it.
 */
const estimate = (table: string) => `
  SELECT (CASE
    WHEN bool_or(c.reltuples < 0 AND pg_relation_size(c.oid) > 0) THEN -1
    ELSE coalesce(sum(CASE
      WHEN c.relpages > 0
        THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::float8)
      ELSE greatest(c.reltuples, 0) END), 0) END)::float8 AS est
  FROM pg_class c WHERE c.oid = ANY(ARRAY(${leafTables(table)}))`

/** `null` where SQL said NULL; numbers for everything else. */
const nullableNumber = (value: unknown): number | null => value === null ? null : toNumber(value)

const statsStatement = (t: Tables) =>
  statement({
    operation: "stats",
    params: [],
    columns: {
      ev_est: "(SELECT est FROM ev)",
      ev_count: "(SELECT count(*) FROM ev_sample)",
      ev_bytes: "(SELECT coalesce(sum(bytes), 0)::float8 FROM ev_sample)",
      ev_width: `(SELECT avg_width::float8 FROM pg_stats
        WHERE schemaname = current_schema() AND tablename = '${t.events}' AND attname = 'payload')`,
      ev_size: `(SELECT sum(pg_table_size(relid))::float8 FROM (${leafTables(t.events)}) leaves)`,
      oldest: `(SELECT ${ms("min(created_at)")} FROM ${t.events})`,
      ev_total: `${eventsTableBytes(t)}::float8`,
      ev_dead: `${eventsDeadTuples(t)}::float8`,
      dl_est: "(SELECT est FROM dl)",
      dl_count: "(SELECT count(*) FROM dl_sample)"
    },
    text: (_, columns) => `
      WITH ev AS (${estimate(t.events)}),
      dl AS (${estimate(t.deadLetters)}),
      ev_sample AS (
        SELECT octet_length(payload) AS bytes FROM ${t.events}
        WHERE (SELECT est FROM ev) < ${exactCountLimit} LIMIT ${exactCountLimit + 1}
      ),
      dl_sample AS (
        SELECT 1 FROM ${t.deadLetters} WHERE (SELECT est FROM dl) < ${exactCountLimit} LIMIT ${exactCountLimit + 1}
      )
      SELECT ${columns}`,
    bind: () => ({}),
    decode: (row, c) => ({
      events: { estimate: nullableNumber(row[c.ev_est]), sampled: nullableNumber(row[c.ev_count]) },
      sampleBytes: nullableNumber(row[c.ev_bytes]),
      payloadWidth: nullableNumber(row[c.ev_width]),
      tableBytes: nullableNumber(row[c.ev_size]),
      oldest: nullableNumber(row[c.oldest]),
      storage: { tableBytes: toNumber(row[c.ev_total]), deadTuples: toNumber(row[c.ev_dead]) },
      deadLetters: { estimate: nullableNumber(row[c.dl_est]), sampled: nullableNumber(row[c.dl_count]) }
    })
  })

const countBySourceTypeStatement = (t: Tables) =>
  statement({
    operation: "countBySourceType",
    params: [],
    columns: { source: "source", type: "type", count: "count(*)", oldest: ms("min(created_at)") },
    text: (_, columns) => `SELECT ${columns} FROM ${t.events} GROUP BY source, type ORDER BY source, type`,
    bind: () => ({}),
    decode: (row, c): SourceTypeCount => ({
      source: row[c.source] as string,
      type: row[c.type] as string,
      count: toNumber(row[c.count]),
      oldestCreatedAt: toNumber(row[c.oldest])
    })
  })

/** A table's row count as the stats statement saw it: the planner's estimate and the bounded sample. */
export interface Sighting {
  readonly estimate: number | null
  readonly sampled: number | null
}

export type BacklogCount =
  | { readonly _tag: "Counted"; readonly value: number; readonly exact: boolean }
  /** The sample hit its limit although the planner thought the table small: its statistics are stale. */
  | { readonly _tag: "NeedsDensity"; readonly sampled: number }

/** How many rows a table holds, from what the stats statement saw. */
export const backlogCount = (seen: Sighting): BacklogCount => {
  if (seen.estimate !== null && seen.estimate >= exactCountLimit) {
    return { _tag: "Counted", value: Math.round(seen.estimate), exact: false }
  }
  const n = seen.sampled ?? 0
  return n <= exactCountLimit ? { _tag: "Counted", value: n, exact: true } : { _tag: "NeedsDensity", sampled: n }
}

/**
 * Payload bytes pending: summed when the backlog was counted, else scaled from the sample, else
 * the planner's average width, else the table's size.
 */
export const payloadBytesOf = (
  backlog: { readonly value: number; readonly exact: boolean },
  seen: { readonly sampled: number | null; readonly sampleBytes: number | null; readonly payloadWidth: number | null; readonly tableBytes: number | null }
): number =>
  backlog.exact
    ? seen.sampleBytes ?? 0
    : (seen.sampled ?? 0) > 0
    ? Math.round(backlog.value * (seen.sampleBytes ?? 0) / (seen.sampled ?? 1))
    : seen.payloadWidth !== null
    ? Math.round(backlog.value * seen.payloadWidth)
    : seen.tableBytes ?? 0

export const makeStatsOperations = (runner: Runner, t: Tables) => {
  const statsText = statsStatement(t)
  const countText = countBySourceTypeStatement(t)

  /**
   * Rows in a table whose statistics are missing or stale: the density of the first rows a
   * sequential scan meets (rows per page), times the table's current pages. Bounded like the
   * sample it repeats; only runs when that sample hit its limit.
   */
  const densityEstimate = (table: string) =>
    runner.runText(
      "stats",
      `SELECT count(*)::float8 / count(DISTINCT (tableoid, (ctid::text::point)[0]))
         * ((SELECT sum(pg_relation_size(relid)) FROM (${leafTables(table)}) leaves) / current_setting('block_size')::float8)
       FROM (SELECT tableoid, ctid FROM ${table} LIMIT ${exactCountLimit + 1}) s`
    ).pipe(Effect.map((rows) => Math.round(toNumber(rows[0]?.[0] ?? 0))))

  const counted = (table: string, seen: Sighting) => {
    const count = backlogCount(seen)
    return count._tag === "Counted"
      ? Effect.succeed(count)
      : Effect.map(densityEstimate(table), (density) => ({ value: Math.max(count.sampled, density), exact: false }))
  }

  const stats = Effect.gen(function*() {
    const [seen] = yield* runner.run(statsText, undefined)
    const backlog = yield* counted(t.events, seen!.events)
    const deadLetters = yield* counted(t.deadLetters, seen!.deadLetters)
    return {
      backlog: backlog.value,
      oldestCreatedAt: seen!.oldest === null ? Option.none() : Option.some(seen!.oldest),
      payloadBytes: payloadBytesOf(backlog, { ...seen!, sampled: seen!.events.sampled }),
      deadLetters: deadLetters.value,
      exact: backlog.exact && deadLetters.exact,
      ...seen!.storage
    } satisfies StoreStats
  }).pipe(Effect.withSpan("PgStore.stats"))

  const countBySourceType = runner.run(countText, undefined).pipe(Effect.withSpan("PgStore.countBySourceType"))

  return { stats, countBySourceType }
}
