/**
 * The baseline sweep as data: which raw-PostgreSQL configurations a scenario's limit is the best
 * of, and how a sweep's results are summed up. Pure (no database): bench/baseline.ts runs the
 * points, and test/bench-sweep.test.ts checks what is here.
 */

/** How the rows reach PostgreSQL: multi-row `VALUES` with scalar parameters, or arrays through `unnest` (the emitter's form). */
export type InsertForm = "values" | "unnest"

/**
 * How a backlog is read and removed: in a transaction, `SELECT … FOR UPDATE SKIP LOCKED` a page
 * then `DELETE … WHERE id = ANY(ids)` (what the emitter does, without the lease update); or one
 * `DELETE … RETURNING payload` per page (no round trip in between).
 */
export type DrainForm = "select-delete" | "delete-returning"

/** One configuration of the sweep. `rows`: rows per INSERT (or rows read per page when draining). */
export interface SweepPoint {
  readonly clients: number
  readonly rows: number
  /** Ids per DELETE; absent when nothing is deleted. */
  readonly deleteIds?: number
  readonly form: InsertForm | DrainForm
}

export interface PointResult extends SweepPoint {
  /** Rows written (and deleted, where the point deletes) while measured. */
  readonly rowsDone: number
  readonly ms: number
  readonly rowsPerSecond: number
}

export interface Sweep {
  /** Every point measured, in the order run. */
  readonly points: ReadonlyArray<PointResult>
  /** The best of `points`: the limit a scenario's ratio is taken against. */
  readonly limit: PointResult
}

/** The point with the highest rate; the first one on a tie. Fails on an empty sweep (nothing to compare against). */
export const bestOf = <P extends { readonly rowsPerSecond: number }>(points: ReadonlyArray<P>): P => {
  let best: P | undefined
  for (const point of points) {
    if (!Number.isFinite(point.rowsPerSecond)) continue
    if (best === undefined || point.rowsPerSecond > best.rowsPerSecond) best = point
  }
  if (best === undefined) throw new Error("baseline sweep: no point produced a rate")
  return best
}

export const sweepOf = (points: ReadonlyArray<PointResult>): Sweep => ({ points, limit: bestOf(points) })

/** Every combination of the dimensions, clients outermost. */
const grid = <F extends InsertForm | DrainForm>(
  clients: ReadonlyArray<number>,
  rows: ReadonlyArray<number>,
  forms: ReadonlyArray<F>,
  deleteIds: (rows: number) => ReadonlyArray<number | undefined>
): ReadonlyArray<SweepPoint> =>
  clients.flatMap((c) =>
    rows.flatMap((r) =>
      forms.flatMap((form) =>
        deleteIds(r).map((d): SweepPoint => (d === undefined ? { clients: c, rows: r, form } : { clients: c, rows: r, deleteIds: d, form }))
      )
    )
  )

/**
 * What the emitter itself may use, from its options: up to `writeConcurrency` concurrent commits
 * of up to `writeBatchSize` rows on a pool of `maxConnections`, deletes of up to
 * `deleteBatchSize` ids, claims of `claimBatchSize` rows. The sweep covers 1, 2 and 4 clients
 * (never more than the pool) and both the baseline's historical 100-row statements and the
 * emitter's largest.
 */
export interface EmitterShape {
  readonly maxConnections: number
  readonly writeBatchSize: number
  readonly deleteBatchSize: number
  readonly claimBatchSize: number
}

const clientCounts = (shape: EmitterShape) => [...new Set([1, 2, 4].map((c) => Math.min(c, shape.maxConnections)))]
const sizes = (...candidates: ReadonlyArray<number>) => [...new Set(candidates.filter((n) => n >= 1))].sort((a, b) => a - b)

/** The write path: INSERTs only. */
export const insertGrid = (shape: EmitterShape) =>
  grid(clientCounts(shape), sizes(100, shape.writeBatchSize), ["values", "unnest"] as const, () => [undefined])

/** End to end: every row inserted then deleted by id, in deletes as small as the insert or as large as the emitter's. */
export const insertDeleteGrid = (shape: EmitterShape) =>
  grid(clientCounts(shape), sizes(100, shape.writeBatchSize), ["unnest"] as const, (r) => sizes(r, shape.deleteBatchSize))

/** A backlog read with payloads and deleted by id, a page at a time. */
export const drainGrid = (shape: EmitterShape) =>
  grid(clientCounts(shape), sizes(100, shape.claimBatchSize), ["select-delete", "delete-returning"] as const, (r) => [r])

/** "4 clients × 1000 rows, unnest, 2000-id deletes". */
export const describePoint = (p: SweepPoint) =>
  `${p.clients} client${p.clients === 1 ? "" : "s"} × ${p.rows} rows, ${p.form}${p.deleteIds === undefined ? "" : `, ${p.deleteIds}-id deletes`}`

/** The JSON form of a sweep: the limit and each point's rate (rows/s, rounded). */
export const sweepJson = (sweep: Sweep) => ({
  limitRowsPerSecond: Math.round(sweep.limit.rowsPerSecond),
  limitAt: describePoint(sweep.limit),
  points: sweep.points.map((p) => ({
    clients: p.clients,
    rows: p.rows,
    ...(p.deleteIds === undefined ? {} : { deleteIds: p.deleteIds }),
    form: p.form,
    rowsPerSecond: Math.round(p.rowsPerSecond)
  }))
})

const thousands = (n: number) => Math.round(n).toLocaleString("en-US")

/** "4c×1000 unnest/2000" for the one-line listing of a sweep. */
const shortPoint = (p: SweepPoint) => `${p.clients}c×${p.rows} ${p.form}${p.deleteIds === undefined || p.deleteIds === p.rows ? "" : `/${p.deleteIds}`}`

/** The readable lines of a scenario's baseline: the limit, the single-client figure, the sweep. */
export const baselineLines = (sweep: Sweep, singleClient: { readonly rowsPerSecond: number }, what: string) => [
  `  baseline limit: ${thousands(sweep.limit.rowsPerSecond)} rows/s ${what} (best of ${sweep.points.length}: ${describePoint(sweep.limit)});` +
  ` single client, 100-row statements: ${thousands(singleClient.rowsPerSecond)} rows/s`,
  `  baseline sweep (rows/s): ${sweep.points.map((p) => `${shortPoint(p)} ${thousands(p.rowsPerSecond)}`).join(", ")}`
]

/** A scenario's rate against the limit and against the single-client figure. */
export const ratiosOf = (eventsPerSecond: number, sweep: Sweep, singleClient: { readonly rowsPerSecond: number }) => ({
  ratio: eventsPerSecond / sweep.limit.rowsPerSecond,
  ratioSingleClient: eventsPerSecond / singleClient.rowsPerSecond
})

/** The JSON fields of a scenario's baseline. */
export const baselineJson = (eventsPerSecond: number, sweep: Sweep, singleClient: { readonly rowsPerSecond: number }) => {
  const { ratio, ratioSingleClient } = ratiosOf(eventsPerSecond, sweep, singleClient)
  return {
    baselineRowsPerSecond: Math.round(sweep.limit.rowsPerSecond),
    ratio: Number(ratio.toFixed(3)),
    singleClientBaselineRowsPerSecond: Math.round(singleClient.rowsPerSecond),
    ratioSingleClient: Number(ratioSingleClient.toFixed(3)),
    baselineSweep: sweepJson(sweep)
  }
}

/**
 * The best point that never has more rows in flight (clients × rows per statement) than
 * `inFlight`: what raw PostgreSQL does with no more work outstanding than a closed loop of
 * `inFlight` emitters can offer. Not the limit; it says how much of the gap is batching the
 * offered load cannot give. Undefined when no point fits.
 */
export const bestWithin = <P extends SweepPoint & { readonly rowsPerSecond: number }>(points: ReadonlyArray<P>, inFlight: number): P | undefined => {
  const fitting = points.filter((p) => p.clients * p.rows <= inFlight)
  return fitting.length === 0 ? undefined : bestOf(fitting)
}

/** The line saying what raw PostgreSQL does within `inFlight` rows outstanding. */
export const withinLine = (sweep: Sweep, inFlight: number, eventsPerSecond: number) => {
  const within = bestWithin(sweep.points, inFlight)
  return within === undefined
    ? `  no sweep point keeps within ${thousands(inFlight)} rows in flight`
    : `  within ${thousands(inFlight)} rows in flight (what ${thousands(inFlight)} emitters can offer), raw PostgreSQL does ${thousands(within.rowsPerSecond)} rows/s` +
      ` (${describePoint(within)}): ratio ${(eventsPerSecond / within.rowsPerSecond).toFixed(2)}`
}
