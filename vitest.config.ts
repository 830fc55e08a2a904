import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Integration suites share one PostgreSQL database; each suite uses its own table prefix.
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // One file at a time: the crash, outage and fault suites run real processes against leases of
    // a second or two; on 2 cores, another suite's processes beside them (the consumer test's
    // build, the fault suite's proxies) stretched those leases into duplicates the tests count.
    fileParallelism: false,
    // Effect's lifecycle logs below WARN ("durable emitter started" with every setting…) would
    // bury the test report; warnings and errors still show.
    onConsoleLog: (log) => !/^\[[\d:.]+\] (INFO|DEBUG|TRACE) \(#\d+\):/.test(log)
  }
})
