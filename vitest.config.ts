import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Integration suites share one PostgreSQL database; each suite uses its own table prefix.
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Effect's lifecycle logs below WARN ("durable emitter started" with every setting…) would
    // bury the test report; warnings and errors still show.
    onConsoleLog: (log) => !/^\[[\d:.]+\] (INFO|DEBUG|TRACE) \(#\d+\):/.test(log)
  }
})
