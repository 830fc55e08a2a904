/** Emit latencies of the demo, in milliseconds: recorded as they come, summarized at the end. */
export interface LatencySummary {
  readonly count: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
}

export const makeLatencies = (capacity: number) => {
  let samples = new Float64Array(Math.max(16, capacity))
  let count = 0
  return {
    record: (ms: number) => {
      if (count === samples.length) {
        const grown = new Float64Array(samples.length * 2)
        grown.set(samples)
        samples = grown
      }
      samples[count++] = ms
    },
    summary: (): LatencySummary => {
      const sorted = samples.slice(0, count).sort()
      // Nearest rank: the smallest sample with at least q of the samples at or below it.
      const at = (q: number) => (count === 0 ? 0 : sorted[Math.min(count - 1, Math.ceil(q * count) - 1)]!)
      return { count, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: count === 0 ? 0 : sorted[count - 1]! }
    }
  }
}
