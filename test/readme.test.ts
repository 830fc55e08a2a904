/** The README's configuration table is the option table (src/config/options.ts), row for row. */
import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import * as Config from "../src/Config.ts"
import { markdownRows } from "../src/config/options.ts"

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")

describe("README", () => {
  for (const key of Object.keys(Config.defaults)) {
    const option = Config.optionName(key) as Config.OptionName
    it(`documents ${option}`, () => {
      assert.include(readme, `| \`${option}\` | \`${Config.envName(option)}\` |`)
    })
  }

  it("has the configuration table generated from the option table (same rows, order, defaults and docs)", () => {
    const rows = readme.split("\n").filter((line) => /^\| `\w+` \| `[A-Z_]+` \|/.test(line))
    assert.deepStrictEqual(rows, [...markdownRows()], `expected README rows:\n${markdownRows().join("\n")}`)
  })
})
