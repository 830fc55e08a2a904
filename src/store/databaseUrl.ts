/**
 * Whether a PostgreSQL URL can work at all, decided before anything connects: a URL that cannot
 * (`not a url`, port 99999, `mysql://…`, `sslmode=maybe`) is a configuration error, not a
 * retryable connection failure that would be retried forever. The emitter's options check the
 * shape (`postgresUrlRule`); this adds what sql-pg refuses when it parses the URL, so that
 * `PgStore.layer` called directly refuses the same URLs with InvalidConfig. Never quotes the URL
 * (it may hold a password); only the part that is wrong.
 */
import { Effect } from "effect"
import { postgresUrlRule } from "../config/postgresUrl.ts"
import { InvalidConfig } from "../Errors.ts"

const sslModes = new Set(["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])

const decodes = (text: string) => {
  try {
    decodeURIComponent(text)
    return true
  } catch {
    return false
  }
}

const validPort = (text: string) => /^[0-9]+$/.test(text) && Number(text) >= 1 && Number(text) <= 65535

/** The rule `url` breaks, or undefined when sql-pg can connect with it. */
export const databaseUrlRule = (url: string): string | undefined => {
  const shape = postgresUrlRule(url)
  if (shape !== undefined) return shape
  const parsed = new URL(url)
  for (const [part, text] of [["host", parsed.hostname], ["user name", parsed.username], ["password", parsed.password], [
    "database",
    parsed.pathname
  ]] as const) {
    if (!decodes(text)) return `has an invalid percent-encoding in its ${part}`
  }
  const sslmode = parsed.searchParams.get("sslmode")
  if (sslmode !== null && !sslModes.has(sslmode)) return `has an unknown sslmode (one of ${[...sslModes].join(", ")})`
  const port = parsed.searchParams.get("port")
  if (port !== null && !validPort(port)) return "has a port parameter outside 1-65535"
  const connectTimeout = parsed.searchParams.get("connect_timeout")
  if (connectTimeout !== null && !/^[0-9]+$/.test(connectTimeout)) return "has a connect_timeout that is not whole seconds"
  return undefined
}

/** Fails with InvalidConfig naming `option` when `url` cannot work. */
export const checkDatabaseUrl = (option: string, url: string): Effect.Effect<void, InvalidConfig> => {
  const rule = databaseUrlRule(url)
  return rule === undefined ? Effect.void : Effect.fail(new InvalidConfig({ option, rule }))
}
