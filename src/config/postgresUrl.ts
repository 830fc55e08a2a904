/**
 * The shape of a PostgreSQL URL, checked before anything connects (no imports: the store's fuller
 * check, src/store/databaseUrl.ts, builds on it, and the options' `databaseUrl` kind uses that).
 */

/** Why a PostgreSQL URL cannot work, or undefined. Never quotes the URL: it may hold a password. */
export const postgresUrlRule = (value: string): string | undefined => {
  if (value.length === 0) return "must not be empty (unset it to use the embedded store)"
  let url: URL
  try {
    url = new URL(value)
  } catch {
    // new URL refuses a port above 65535 too; say so rather than "not a URL".
    const port = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*:(\d+)(?:[/?#]|$)/i.exec(value)?.[1]
    return port !== undefined && Number(port) > 65535
      ? "has a port outside 1-65535"
      : "is not a URL (expected postgres://user:password@host:port/database)"
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    return `must be a postgres:// or postgresql:// URL, got scheme ${url.protocol.slice(0, -1)}`
  }
  if (url.port === "0") return "has a port outside 1-65535"
  return undefined
}
