/**
 * Resolving options: the input over the defaults, every option decoded by its kind (./kinds.ts),
 * then the rules that relate options to each other. Fails with InvalidConfig naming the option
 * and the rule. `describe` is what the logs and the config-info gauge show.
 */
import { Effect, Option, Result } from "effect"
import { InvalidConfig } from "../Errors.ts"
import {
  decodeAll,
  type EmitterOptions,
  type EmitterOptionsInput,
  type OptionName,
  optionNames,
  type Part,
  resolvedKey,
  specOf,
  table
} from "./options.ts"

/** A send starts only if its row's lease lasts this many request timeouts longer (see Publisher). */
export const leaseSlack = 1.25

const allParts: ReadonlyArray<Part> = ["store", "transport", "emitter"]

/** The rules between options, in the order they are checked: the first broken one is reported. */
const crossRules = (o: EmitterOptions): InvalidConfig | undefined => {
  const fail = (option: string, rule: string) => new InvalidConfig({ option, rule })
  if (o.maxEventBytes > o.maxRequestBytes) return fail("maxEventBytes", "must not exceed maxRequestBytes: such an event could never be sent")
  if (o.retryBaseDelayMs > o.retryMaxDelayMs) return fail("retryBaseDelay", "must not exceed retryMaxDelay")
  if (o.leaseBaseMs > o.leaseMaxMs) return fail("leaseBase", "must not exceed leaseMax")
  // A send starts only while its row's lease can cover the whole request (Publisher.leaseSlack).
  if (o.firstLeaseMs <= o.requestTimeoutMs * leaseSlack) {
    return fail("firstLease", `must exceed ${leaseSlack} × requestTimeout, or the fast path could not send a new row within its lease`)
  }
  if (o.leaseBaseMs <= o.requestTimeoutMs * leaseSlack) {
    return fail("leaseBase", `must exceed ${leaseSlack} × requestTimeout, or a claimed row could not be sent within its lease`)
  }
  if (o.ttlMs <= o.firstLeaseMs) return fail("ttl", "must exceed firstLease, or rows expire before the retransmitter may send them")
  return undefined
}

/** Why a key the input holds is not taken, or undefined. */
const refusedKey = (key: string, parts: ReadonlyArray<Part>): string | undefined => {
  const spec = specOf(key)
  if (spec === undefined) return "unknown option"
  if (!parts.includes(spec.part)) {
    return `is not used here: the ${spec.part === "store" ? "Store" : "Transport"} is provided by you (configure it there)`
  }
  return undefined
}

/**
 * Merges the input over the defaults and checks every rule. `parts` are the layers being built:
 * an option of another part is refused rather than ignored (`layerNoDeps` builds only "emitter";
 * its Store and Transport come with their own options).
 */
export const resolve = (
  input: EmitterOptionsInput = {},
  parts: ReadonlyArray<Part> = allParts
): Effect.Effect<EmitterOptions, InvalidConfig> =>
  Effect.suspend(() => {
    for (const [key, value] of Object.entries(input)) {
      if (value === undefined) continue
      const refused = refusedKey(key, parts)
      if (refused !== undefined) return Effect.fail(new InvalidConfig({ option: key, rule: refused }))
    }
    const decoded = decodeAll(input, optionNames)
    if (Result.isFailure(decoded)) return Effect.fail(new InvalidConfig(decoded.failure))
    const broken = crossRules(decoded.success)
    return broken === undefined ? Effect.succeed(decoded.success) : Effect.fail(broken)
  })

/** The options of the parts built, as users name them. */
const namesOf = (parts: ReadonlyArray<Part>): ReadonlyArray<OptionName> =>
  optionNames.filter((name) => parts.includes(table[name].part))

/**
 * The settings worth publishing in the config-info gauge: no secrets (`databaseUrl` shows as
 * `store: postgres | pglite`, headers by name), and only the options of the parts built.
 */
export const describe = (o: EmitterOptions, parts: ReadonlyArray<Part> = allParts): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const name of namesOf(parts)) {
    const kind = table[name].kind as { readonly show: (value: unknown) => string }
    const value: unknown = o[resolvedKey(name)]
    if (name === "databaseUrl") out.store = kind.show(value)
    else if (name === "dataDir" && Option.isSome(o.databaseUrl)) continue // not used on PostgreSQL
    else out[name] = kind.show(value)
  }
  return out
}

/** The settings that differ from the defaults as `name=value` pairs, leaving out `shown` (for the one start line). */
export const describeChanged = (
  o: EmitterOptions,
  defaults: EmitterOptions,
  parts: ReadonlyArray<Part> = allParts,
  shown: ReadonlyArray<string> = []
): string => {
  const before = describe(defaults, parts)
  return Object.entries(describe(o, parts))
    .filter(([key, value]) => before[key] !== value && !shown.includes(key))
    .map(([key, value]) => `${key}=${value}`)
    .join(" ")
}
