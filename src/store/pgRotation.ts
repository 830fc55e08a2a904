/**
 * Keeps the partitioned events table (pgPartitions.ts) small: a loop in the store's scope checks
 * the current partition's size and, once it passes `partitionBytes`, switches new rows to the next
 * partition of the ring after moving that partition's few live rows out and truncating it, in one
 * transaction. Several processes may run the loop on one database: they take turns on the
 * rotation row, and the one that finds the ring already moved on does nothing.
 *
 * Why it is safe: the partition to truncate is locked ACCESS EXCLUSIVE first, so every statement
 * that touched it has finished (committed rows are moved, an open transaction makes the attempt
 * give up) and none can touch it until the commit; the copy keeps every column, the id included.
 * The lock is waited for at most `lockTimeout`: statements that queue behind it (deletes and
 * claims read every partition) wait no longer than that.
 */
import { Data, Duration, Effect, Option, Schedule, type Scope } from "effect"
import type { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import { InvalidConfig } from "../Errors.ts"
import { eventColumns, partitionName, partitionNames, slotCount } from "./pgPartitions.ts"
import type { Tables } from "./pgSchema.ts"

export interface RotationOptions {
  /**
   * Rotate once the current partition (heap, TOAST and indexes) reaches this many bytes. The whole
   * table stays near three times this under continuous churn. Default 32 MiB.
   */
  readonly partitionBytes?: number | undefined
  /** How often the size is checked. Default 1 second. */
  readonly rotationInterval?: Duration.Input | undefined
}

export interface RotationSettings {
  readonly partitionBytes: number
  readonly interval: Duration.Duration
  /** A partition holding more live rows than this is not truncated (its rows are still draining). */
  readonly maxMoveRows: number
  /** Literal for `SET LOCAL lock_timeout`. */
  readonly lockTimeout: string
}

export const defaultPartitionBytes = 32 * 1024 * 1024
const defaultInterval = Duration.seconds(1)
const maxMoveRows = 20_000
const lockTimeout = "100ms"

export const rotationSettings = (options: RotationOptions): Effect.Effect<RotationSettings, InvalidConfig> => {
  const partitionBytes = options.partitionBytes ?? defaultPartitionBytes
  if (!Number.isSafeInteger(partitionBytes) || partitionBytes < 1) {
    return Effect.fail(new InvalidConfig({ option: "partitionBytes", rule: "must be a positive integer" }))
  }
  const interval = options.rotationInterval === undefined
    ? Option.some(defaultInterval)
    : Duration.fromInput(options.rotationInterval)
  if (Option.isNone(interval) || !Duration.isFinite(interval.value) || Duration.toMillis(interval.value) <= 0) {
    return Effect.fail(new InvalidConfig({ option: "rotationInterval", rule: "must be a positive, finite duration" }))
  }
  return Effect.succeed({ partitionBytes, interval: interval.value, maxMoveRows, lockTimeout })
}

/** What one check saw: the current slot and each partition's bytes, by slot. */
export interface RingState {
  readonly current: number
  readonly bytes: ReadonlyArray<number>
}

/**
 * The slots worth trying, best first: none while the current partition is below the bound, else
 * the others in ring order (the next one has drained longest).
 */
export const rotationTargets = (state: RingState, partitionBytes: number): ReadonlyArray<number> => {
  if ((state.bytes[state.current] ?? 0) < partitionBytes) return []
  return Array.from({ length: slotCount - 1 }, (_, i) => (state.current + 1 + i) % slotCount)
}

export type RotationOutcome =
  | { readonly _tag: "Rotated"; readonly from: number; readonly to: number; readonly moved: number }
  | { readonly _tag: "NotNeeded" }
  | { readonly _tag: "Draining"; readonly current: number }

/** Rolls the rotation attempt back: the partition still holds too much to copy. */
class NotMovable extends Data.TaggedError("NotMovable") {}

const lockNotAvailable = (error: SqlError | NotMovable): boolean => {
  if (error instanceof NotMovable) return false
  const cause = error.reason.cause as { readonly code?: unknown } | undefined
  return cause?.code === "55P03"
}

/** One check, and a rotation when the current partition is full. */
export const rotateIfFull = (
  sql: SqlClient.SqlClient,
  t: Tables,
  settings: RotationSettings
): Effect.Effect<RotationOutcome, SqlError> =>
  Effect.gen(function*() {
    const names = partitionNames(t.events)
    const [row] = yield* sql.unsafe(
      `SELECT current, ${names.map((name) => `pg_total_relation_size('${name}')::float8`).join(", ")} FROM ${t.rotation}`
    ).values
    if (row === undefined) return { _tag: "NotNeeded" } as const
    const current = Number(row[0])
    const targets = rotationTargets({ current, bytes: row.slice(1).map(Number) }, settings.partitionBytes)
    if (targets.length === 0) return { _tag: "NotNeeded" } as const
    for (const target of targets) {
      const moved = yield* rotateTo(sql, t, settings, current, target)
      if (moved !== undefined) return { _tag: "Rotated", from: current, to: target, moved } as const
    }
    return { _tag: "Draining", current } as const
  })

/** Whether a partition's live rows are few enough to copy while it is locked. */
export const movable = (live: { readonly rows: number; readonly bytes: number }, settings: RotationSettings): boolean =>
  live.rows <= settings.maxMoveRows && live.bytes <= settings.partitionBytes / 4

/**
 * Moves `target`'s live rows into `current`, truncates `target` and makes it current. Undefined
 * when it cannot now: too many live rows, a lock held elsewhere, or another process rotated first.
 *
 * Both reads of the partition go through its id index: it is mostly dead rows, and an index
 * scan skips the entries an earlier scan found dead without reading the heap, so the time the
 * partition is locked is the time to copy its live rows, not to read its dead ones. The first read,
 * before the lock, is the one that marks them.
 */
const rotateTo = (
  sql: SqlClient.SqlClient,
  t: Tables,
  settings: RotationSettings,
  current: number,
  target: number
): Effect.Effect<number | undefined, SqlError> => {
  const partition = partitionName(t.events, target)
  const live = `SELECT * FROM ${partition} ORDER BY id`
  return sql.withTransaction(Effect.gen(function*() {
    for (const setting of [`lock_timeout = '${settings.lockTimeout}'`, "enable_seqscan = off", "enable_bitmapscan = off", "jit = off"]) {
      yield* sql.unsafe(`SET LOCAL ${setting}`).unprepared
    }
    // Takes the rotation row first: rotators on other processes wait here, then find it moved on.
    const switched = yield* sql.unsafe(
      `UPDATE ${t.rotation} SET current = ${target}, rotated_at = now(), rotations = rotations + 1
       WHERE current = ${current} RETURNING 1`
    ).unprepared
    if (switched.length === 0) return undefined
    const [counted] = yield* sql.unsafe(
      `SELECT count(*), coalesce(sum(pg_column_size(l.*)), 0)::float8 FROM (${live} LIMIT ${settings.maxMoveRows + 1}) l`
    ).values
    if (!movable({ rows: Number(counted?.[0] ?? 0), bytes: Number(counted?.[1] ?? 0) }, settings)) {
      return yield* Effect.fail(new NotMovable())
    }
    yield* sql.unsafe(`LOCK TABLE ${partition} IN ACCESS EXCLUSIVE MODE`).unprepared
    const [moved] = yield* sql.unsafe(
      `WITH moved AS (
         INSERT INTO ${t.events} (id, slot, ${eventColumns})
         SELECT id, ${current}, ${eventColumns} FROM (${live}) l
         RETURNING 1
       )
       SELECT count(*) FROM moved`
    ).values
    yield* sql.unsafe(`TRUNCATE ${partition}`).unprepared
    return Number(moved?.[0] ?? 0)
  })).pipe(
    Effect.catchIf(
      (error): error is SqlError | NotMovable => error instanceof NotMovable || lockNotAvailable(error),
      () => Effect.succeed(undefined)
    )
  )
}

/**
 * The rotation loop, forked in the caller's scope. A failed check is logged and the loop goes on:
 * the table only grows meanwhile, nothing is lost.
 */
export const forkRotation = (
  sql: SqlClient.SqlClient,
  t: Tables,
  settings: RotationSettings
): Effect.Effect<void, never, Scope.Scope> =>
  rotateIfFull(sql, t, settings).pipe(
    Effect.timeout(Duration.seconds(30)),
    Effect.tap((outcome) =>
      outcome._tag === "Rotated"
        ? Effect.logDebug(`events table: partition ${outcome.from} full, new rows go to ${outcome.to}`, {
          moved: outcome.moved
        })
        : outcome._tag === "Draining"
        ? Effect.logDebug(`events table: partition ${outcome.current} full, the others still draining`)
        : Effect.void
    ),
    Effect.catchCause((cause) => Effect.logWarning("events table rotation failed; will try again", cause)),
    Effect.repeat(Schedule.spaced(settings.interval)),
    Effect.asVoid,
    Effect.forkScoped
  )
