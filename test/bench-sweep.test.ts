import { assert, describe, it } from "@effect/vitest"
import {
  baselineJson,
  bestOf,
  bestWithin,
  describePoint,
  drainGrid,
  insertDeleteGrid,
  insertGrid,
  type PointResult,
  ratiosOf,
  sweepOf
} from "../bench/sweep.ts"

const point = (clients: number, rows: number, rowsPerSecond: number, deleteIds?: number): PointResult => ({
  clients,
  rows,
  form: "unnest",
  ...(deleteIds === undefined ? {} : { deleteIds }),
  rowsDone: Math.round(rowsPerSecond),
  ms: 1000,
  rowsPerSecond
})

const emitterDefaults = { maxConnections: 10, writeBatchSize: 1000, deleteBatchSize: 2000, claimBatchSize: 1000 }

describe("bench baseline sweep", () => {
  it("the limit is the best point, wherever it is in the sweep", () => {
    const points = [point(1, 100, 84_000), point(4, 1000, 199_000), point(2, 100, 125_000)]
    assert.strictEqual(bestOf(points), points[1])
    assert.strictEqual(sweepOf(points).limit.rowsPerSecond, 199_000)
  })

  it("a tie keeps the first point; a point without a rate is never the limit", () => {
    const points = [point(1, 100, Number.NaN), point(1, 1000, 50_000), point(2, 1000, 50_000), point(4, 1000, Infinity)]
    assert.strictEqual(bestOf(points), points[1])
  })

  it("an empty sweep (or one without any rate) fails instead of dividing by nothing", () => {
    assert.throws(() => bestOf([]), /no point produced a rate/)
    assert.throws(() => bestOf([point(1, 100, Number.NaN)]), /no point produced a rate/)
  })

  it("ratios are taken against the limit, and against the single-client figure as a second column", () => {
    const sweep = sweepOf([point(1, 100, 100_000), point(4, 1000, 200_000)])
    const r = ratiosOf(100_000, sweep, { rowsPerSecond: 80_000 })
    assert.strictEqual(r.ratio, 0.5)
    assert.strictEqual(r.ratioSingleClient, 1.25)
    const json = baselineJson(100_000, sweep, { rowsPerSecond: 80_000 })
    assert.strictEqual(json.baselineRowsPerSecond, 200_000)
    assert.strictEqual(json.singleClientBaselineRowsPerSecond, 80_000)
    assert.strictEqual(json.baselineSweep.limitAt, "4 clients × 1000 rows, unnest")
    assert.strictEqual(json.baselineSweep.points.length, 2)
  })

  it("the grids cover 1, 2 and 4 clients and the emitter's own statement sizes", () => {
    const inserts = insertGrid(emitterDefaults)
    assert.deepStrictEqual([...new Set(inserts.map((p) => p.clients))], [1, 2, 4])
    assert.deepStrictEqual([...new Set(inserts.map((p) => p.rows))], [100, 1000])
    assert.deepStrictEqual([...new Set(inserts.map((p) => p.form))], ["values", "unnest"])
    assert.strictEqual(inserts.length, 12)
    assert.isTrue(inserts.every((p) => p.deleteIds === undefined))

    const e2e = insertDeleteGrid(emitterDefaults)
    assert.deepStrictEqual(e2e.filter((p) => p.clients === 1).map((p) => [p.rows, p.deleteIds]), [[100, 100], [100, 2000], [1000, 1000], [1000, 2000]])

    const drain = drainGrid(emitterDefaults)
    assert.deepStrictEqual([...new Set(drain.map((p) => p.form))], ["select-delete", "delete-returning"])
    assert.isTrue(drain.every((p) => p.deleteIds === p.rows))
  })

  it("the grids follow the emitter's options: a smaller pool caps the clients, other batch sizes are swept", () => {
    const shape = { maxConnections: 2, writeBatchSize: 500, deleteBatchSize: 500, claimBatchSize: 250 }
    assert.deepStrictEqual([...new Set(insertGrid(shape).map((p) => p.clients))], [1, 2])
    assert.deepStrictEqual([...new Set(insertGrid(shape).map((p) => p.rows))], [100, 500])
    assert.deepStrictEqual(insertDeleteGrid(shape).filter((p) => p.clients === 1).map((p) => [p.rows, p.deleteIds]), [[100, 100], [100, 500], [500, 500]])
    assert.deepStrictEqual([...new Set(drainGrid(shape).map((p) => p.rows))], [100, 250])
  })

  it("a point describes itself", () => {
    assert.strictEqual(describePoint(point(4, 1000, 1, 2000)), "4 clients × 1000 rows, unnest, 2000-id deletes")
    assert.strictEqual(describePoint(point(1, 100, 1)), "1 client × 100 rows, unnest")
  })
})

describe("bench sweep within the offered load", () => {
  it("only points with no more rows in flight than the emitters offer count", () => {
    const points = [point(1, 100, 84_000), point(2, 100, 120_000), point(4, 1000, 199_000)]
    assert.strictEqual(bestWithin(points, 100), points[0])
    assert.strictEqual(bestWithin(points, 200), points[1])
    assert.strictEqual(bestWithin(points, 10_000), points[2])
    assert.strictEqual(bestWithin(points, 50), undefined)
  })
})
