/** The README's configuration table documents every option under its environment variable. */
import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import * as Config from "../src/Config.ts"

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")

describe("README", () => {
  for (const key of Object.keys(Config.defaults)) {
    const option = Config.optionName(key) as keyof Config.EmitterOptionsInput
    it(`documents ${option}`, () => {
      assert.include(readme, `| \`${option}\` | \`${Config.envName(option)}\` |`)
    })
  }
})
