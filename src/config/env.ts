/**
 * Options from the environment (`DATABASE_URL`, `DURABLE_EMITTER_<OPTION>`), through the current
 * ConfigProvider. Every failure is an InvalidConfig naming the variable:
 * - a value that does not parse (`DURABLE_EMITTER_WRITE_BATCH_SIZE=abc`, `" 100 "`);
 * - a variable set but empty: never read as unset (`DATABASE_URL=""` would otherwise move
 *   durability to the embedded store in silence);
 * - a DURABLE_EMITTER_* variable that names no option (a typo would otherwise be ignored), with
 *   the nearest option's variable when there is one.
 */
import { ConfigProvider, Effect, Result } from "effect"
import { InvalidConfig } from "../Errors.ts"
import type { Kind } from "./kinds.ts"
import { type EmitterOptionsInput, envName, optionNames, table } from "./options.ts"

type Lookup =
  | { readonly _tag: "Set"; readonly value: string }
  | { readonly _tag: "Empty" }
  | { readonly _tag: "Absent" }

const absent: Lookup = { _tag: "Absent" }
const empty: Lookup = { _tag: "Empty" }

const load = (provider: ConfigProvider.ConfigProvider, path: ReadonlyArray<string>) =>
  provider.load(path).pipe(Effect.orElseSucceed(() => undefined))

/**
 * One variable. The env provider reads "" as unset, but its index of names (split at "_") still
 * lists the variable: then it was set, and empty. (When other variables extend the name, e.g.
 * DURABLE_EMITTER_RETRANSMIT_INTERVAL, an empty DURABLE_EMITTER_RETRANSMIT cannot be told from an
 * absent one, and counts as absent.)
 */
const lookup = Effect.fnUntraced(function*(provider: ConfigProvider.ConfigProvider, name: string) {
  const direct = yield* load(provider, [name])
  if (direct !== undefined && direct.value !== undefined) return direct.value === "" ? empty : { _tag: "Set", value: direct.value } as const
  const segments = name.split("_")
  const parent = yield* load(provider, segments.slice(0, -1))
  if (parent?._tag !== "Record" || !parent.keys.has(segments[segments.length - 1]!)) return absent
  return (yield* load(provider, segments)) === undefined ? empty : absent
})

const envPrefix = ["DURABLE", "EMITTER"]
const knownEnvNames: ReadonlySet<string> = new Set(optionNames.map(envName))

/** The DURABLE_EMITTER_* variables the provider holds (the env provider splits names at "_"). */
const prefixedEnvNames = (provider: ConfigProvider.ConfigProvider): Effect.Effect<ReadonlyArray<string>> =>
  Effect.gen(function*() {
    const names: Array<string> = []
    const walk = (path: ReadonlyArray<string>): Effect.Effect<void> =>
      load(provider, path).pipe(
        Effect.flatMap((node) => {
          // An empty leaf loads as nothing, yet its parent lists it: it is a variable too.
          if (node === undefined || node._tag === "Value" || node.value !== undefined) names.push(path.join("_"))
          if (node === undefined || node._tag !== "Record" || path.length > 12) return Effect.void
          return Effect.forEach(node.keys, (key) => walk([...path, key]), { discard: true })
        })
      )
    const root = yield* load(provider, envPrefix)
    if (root?._tag === "Record") yield* Effect.forEach(root.keys, (key) => walk([...envPrefix, key]), { discard: true })
    return names
  })

/** Edit distance, for "did you mean". */
const distance = (a: string, b: string): number => {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]!
}

const unknownVariable = (name: string) => {
  const nearest = [...knownEnvNames].map((known) => ({ known, d: distance(name, known) })).sort((x, y) => x.d - y.d)[0]
  const hint = nearest !== undefined && nearest.d <= 3 ? `; did you mean ${nearest.known}?` : ""
  return new InvalidConfig({ option: name, rule: `no such option (an unknown DURABLE_EMITTER_* variable)${hint}` })
}

/** Options read from the environment; absent variables are left out (defaults apply later). */
export const fromEnv: Effect.Effect<EmitterOptionsInput, InvalidConfig> = Effect.gen(function*() {
  const provider = yield* ConfigProvider.ConfigProvider
  for (const name of yield* prefixedEnvNames(provider)) {
    if (!knownEnvNames.has(name)) return yield* unknownVariable(name)
  }
  const input: Record<string, unknown> = {}
  for (const option of optionNames) {
    const variable = envName(option)
    const found = yield* lookup(provider, variable)
    if (found._tag === "Absent") continue
    if (found._tag === "Empty") {
      return yield* new InvalidConfig({ option: variable, rule: "is set but empty: give it a value, or unset it for the default" })
    }
    const parsed = (table[option].kind as Kind<unknown, unknown, boolean>).parse(found.value)
    if (Result.isFailure(parsed)) return yield* new InvalidConfig({ option: variable, rule: parsed.failure })
    input[option] = parsed.success
  }
  return input as EmitterOptionsInput
})
