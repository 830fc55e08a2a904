import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Integration suites share one PostgreSQL database; each suite uses its own table prefix.
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
