/**
 * The rotating layout of the events table: a table partitioned by LIST on `slot` into a fixed
 * ring of partitions, so space is given back by TRUNCATE, not by VACUUM. PostgreSQL only reuses
 * the space of deleted rows once VACUUM has run; with autovacuum off (many CI and some managed
 * setups) or absent (PGlite) a churned table grows without bound (measured: 1 GB after 90 s of
 * churn at ~25 000 rows/s). New rows go to the current partition; when it passes a size, the
 * store switches to the next one, which has been drained by then: its few live rows are copied
 * into the current partition and it is truncated, in one transaction (see pgRotation.ts). This is
 * PgQ's rotating tables, with the leftovers moved instead of waited for.
 *
 * Row ids stay one sequence over all partitions, and a row keeps its id, seq and every column when
 * it is moved, so nothing a caller holds (row ids, leases) changes meaning.
 */

/** The names this file needs (a part of pgSchema's `Tables`, which imports this file). */
export interface EventsNames {
  readonly events: string
  readonly eventsIdSeq: string
  readonly eventsIdIdx: string
  readonly eventsNextAttemptIdx: string
  readonly eventsCreatedIdx: string
  readonly rotation: string
}

/** How many partitions the ring has: the current one, the one draining, and one to skip to. */
export const slotCount = 3

export const partitionName = (events: string, slot: number) => `${events}_${slot}`

export const partitionNames = (events: string): ReadonlyArray<string> =>
  Array.from({ length: slotCount }, (_, slot) => partitionName(events, slot))

/** The columns of an events row, in table order, after `id, slot`. */
export const eventColumns = "source, type, seq, event_id, payload, created_at, next_attempt_at, attempts, last_error"

/** The slot new rows go to: one row read, evaluated once per statement. */
export const currentSlot = (t: EventsNames) => `(SELECT current FROM ${t.rotation})`

/** The tables holding a table's rows: its partitions, or the table itself when it has none. */
export const leafTables = (table: string) => `
  SELECT relid FROM pg_partition_tree('${table}') WHERE isleaf
  UNION ALL SELECT '${table}'::regclass WHERE NOT EXISTS (SELECT FROM pg_partition_tree('${table}'))`

/**
 * Total bytes of the events table: every partition's heap, TOAST and indexes. Also right for the
 * unpartitioned layout of migration 1.
 */
export const eventsTableBytes = (t: Pick<EventsNames, "events">) =>
  `(SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::int8 FROM (${leafTables(t.events)}) leaves)`

/**
 * Dead rows in the events table, as the statistics system counts them (reset by TRUNCATE). Read
 * per partition, not through pg_stat_user_tables: that view scans pg_class and pg_index whole,
 * and without autovacuum pg_class only grows.
 */
export const eventsDeadTuples = (t: Pick<EventsNames, "events">) =>
  `(SELECT coalesce(sum(pg_stat_get_dead_tuples(relid)), 0)::int8 FROM (${leafTables(t.events)}) leaves)`

/**
 * Migration 2: the table of migration 1 (plain, identity id) becomes the partitioned one, with
 * every row copied under its id into slot 0 and the id sequence continuing where it was. The old
 * table is renamed away first, so nothing else can write to it meanwhile (the rename holds an
 * exclusive lock until the migration commits).
 */
export const toPartitioned = (t: EventsNames): ReadonlyArray<string> => {
  const old = `${t.events}_v1`
  const ids = `${t.eventsIdSeq}2`
  return [
    `ALTER TABLE ${t.events} RENAME TO ${old}`,
    `DROP INDEX ${t.eventsNextAttemptIdx}, ${t.eventsCreatedIdx}`,
    `CREATE SEQUENCE ${ids} AS bigint`,
    // The same next number, whether or not the old sequence was ever used.
    `SELECT setval('${ids}', last_value, is_called) FROM ${t.eventsIdSeq}`,
    `CREATE TABLE ${t.events} (
      id bigint NOT NULL DEFAULT nextval('${ids}'),
      -- A row inserted without a slot (an older version of this library) lands in 0: no harm,
      -- rotation moves every live row out of a partition before truncating it.
      slot smallint NOT NULL DEFAULT 0,
      source text NOT NULL,
      type text NOT NULL,
      seq bigint NOT NULL,
      event_id text NOT NULL,
      payload bytea NOT NULL,
      created_at timestamptz NOT NULL,
      next_attempt_at timestamptz NOT NULL,
      attempts integer NOT NULL DEFAULT 0,
      last_error text
    ) PARTITION BY LIST (slot)`,
    ...partitionNames(t.events).map((name, slot) =>
      `CREATE TABLE ${name} PARTITION OF ${t.events} FOR VALUES IN (${slot})`
    ),
    `INSERT INTO ${t.events} (id, slot, ${eventColumns}) SELECT id, 0, ${eventColumns} FROM ${old}`,
    `CREATE INDEX ${t.eventsIdIdx} ON ${t.events} (id)`,
    `CREATE INDEX ${t.eventsNextAttemptIdx} ON ${t.events} (next_attempt_at, id)`,
    `CREATE INDEX ${t.eventsCreatedIdx} ON ${t.events} (created_at)`,
    `DROP TABLE ${old}`,
    `ALTER SEQUENCE ${ids} RENAME TO ${t.eventsIdSeq}`,
    `ALTER SEQUENCE ${t.eventsIdSeq} OWNED BY ${t.events}.id`,
    `CREATE TABLE ${t.rotation} (
      only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
      current smallint NOT NULL,
      rotated_at timestamptz NOT NULL,
      rotations bigint NOT NULL DEFAULT 0
    )`,
    `INSERT INTO ${t.rotation} (current, rotated_at) VALUES (0, now())`
  ]
}
