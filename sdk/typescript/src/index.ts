/**
 * TypeScript SDK for the RCRT Secrets service.
 *
 * The SDK is a thin, dependency-free layer over the service's HTTP API: it uses only the
 * platform's `fetch`, sends JSON, and turns every failure into an {@link RcrtError}.
 *
 * It never logs anything, and secret values never appear in error messages it builds.
 *
 * @example
 * ```ts
 * import { createClient } from '@rcrt/secrets';
 *
 * const client = createClient({ baseUrl: 'http://127.0.0.1:8081' });
 * const workspace = 'team-a';
 * const vault = await client.createSecretVault(workspace, { API_KEY: 'secret-value' });
 * const secrets = await client.getSecretsFromVault(vault.id, 'audit reason');
 * secrets.API_KEY; // 'secret-value'
 * ```
 *
 * @packageDocumentation
 */

/** Where a secret lives: tenant-wide (`global`), in one workspace, or private to one agent. */
export type ScopeType = 'global' | 'workspace' | 'agent';

/**
 * A secret's metadata, exactly as the service returns it. It never contains the value.
 */
export interface SecretMetadata {
  /** The secret's id (a UUIDv7; ids sort by creation time). */
  id: string;
  /** The secret's name, unique within its tenant and scope. */
  name: string;
  /** The scope type. */
  scope_type: ScopeType;
  /** The workspace or agent id; `null` for `global` secrets. */
  scope_id: string | null;
  /** The current version, starting at 1 and incremented by every update. */
  version: number;
  /** When the secret was created (RFC 3339). */
  created_at: string;
  /** When the current version was written (RFC 3339). */
  updated_at: string;
  /** Free text for people; `''` when unset. */
  description: string;
  /** Key → value labels (`{}` when none); filter listings with {@link ListSecretsQuery.labels}. */
  labels: Record<string, string>;
  /**
   * When the secret expires (RFC 3339): from then on a decrypt rejects with 410 `expired` (unless
   * the service runs with `EXPIRED_SECRETS=allow`). `null`: never.
   */
  expires_at: string | null;
  /** How many versions it keeps (1-100); `null`: the service's default (`MAX_VERSIONS`). */
  max_versions: number | null;
}

/**
 * A soft-deleted secret, as {@link RcrtClient.listDeletedSecrets} lists it: hidden from reads,
 * listings and vaults, and restorable with {@link RcrtClient.restoreSecret} until `purge_at`.
 */
export interface DeletedSecretMetadata extends SecretMetadata {
  /** When it was deleted (RFC 3339). */
  deleted_at: string;
  /** When the service shreds it for good (RFC 3339); restorable until then. */
  purge_at: string;
}

/**
 * The answer to a delete with a recovery window ({@link DeleteSecretOptions.recoveryWindow}, or
 * the service's `DELETE_RECOVERY_WINDOW`).
 */
export interface SecretDeletion {
  /** The secret's id. */
  id: string;
  /** When it was deleted (RFC 3339). */
  deleted_at: string;
  /** When it is shredded for good (RFC 3339); {@link RcrtClient.restoreSecret} works until then. */
  purge_at: string;
}

/** Whether a version can still be read: `current`, `kept` (an older one) or `destroyed`. */
export type VersionState = 'current' | 'kept' | 'destroyed';

/** One version in a secret's history. It never contains the value. */
export interface SecretVersion {
  /** The version number. */
  version: number;
  /** When it was written (RFC 3339). */
  created_at: string;
  /** Who wrote it (the audit log's `user_id`; `''` for versions written before this was kept). */
  created_by: string;
  /** `current`, `kept` or `destroyed`. */
  state: VersionState;
  /** When it was destroyed (RFC 3339); `null` unless `state` is `destroyed`. */
  destroyed_at: string | null;
}

/** One page of {@link RcrtClient.listSecretVersions}. */
export interface SecretVersionPage {
  /** The versions on this page, newest first. */
  versions: SecretVersion[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  next_cursor: string | null;
}

/** Paging for {@link RcrtClient.listSecretVersions}. */
export interface ListVersionsQuery {
  /** Page size (the service's default applies when omitted; it must be at least 1). */
  limit?: number | undefined;
  /** The `next_cursor` of the previous page. */
  cursor?: string | undefined;
}

/**
 * The input of {@link RcrtClient.updateSecretMetadata}: only the fields given change (field
 * names are the service's). `labels` replaces the whole set (`{}` removes every label);
 * `expires_at: null` removes the expiry and `max_versions: null` goes back to the service's
 * default.
 */
export interface SecretMetadataPatch {
  /** Free text, at most 1024 characters, no control characters (`''` clears it). */
  description?: string | undefined;
  /**
   * At most 64 labels. Keys: 1-63 characters of `a-z 0-9 . _ - /`, starting with a letter or
   * digit; values: at most 256 characters, no control characters and no `,`.
   */
  labels?: Record<string, string> | undefined;
  /** When the secret expires: an RFC 3339 string or a `Date`; `null` for never. */
  expires_at?: string | Date | null | undefined;
  /** How many versions to keep, 1-100; `null` for the service's default. */
  max_versions?: number | null | undefined;
}

/** The input of {@link RcrtClient.createSecret}. */
export interface CreateSecretInput {
  /**
   * The name: letters, digits, `-`, `_`, `.` and `/`, at most 128 characters. Unique within the
   * tenant and scope (a duplicate gives a 409 `name_taken`).
   */
  name: string;
  /** The value to store. It is encrypted under a fresh data key before it is written. */
  value: string;
  /** The scope type. `global` secrets can only be written by `secrets.admin` callers. */
  scope_type: ScopeType;
  /** The workspace id (for `workspace`) or agent id (for `agent`); omit for `global`. */
  scope_id?: string | undefined;
  /** Free text, at most 1024 characters, no control characters. */
  description?: string | undefined;
  /** At most 64 labels (see {@link SecretMetadataPatch.labels} for the rules). */
  labels?: Record<string, string> | undefined;
  /** When the secret expires: an RFC 3339 string or a `Date`. */
  expires_at?: string | Date | null | undefined;
  /** How many versions to keep, 1-100 (the service's default when omitted or `null`). */
  max_versions?: number | null | undefined;
}

/** Filters and paging for {@link RcrtClient.listSecrets}. */
export interface ListSecretsQuery {
  /** Only secrets of this scope type. */
  scope_type?: ScopeType | undefined;
  /** Only secrets of this scope id; without `scope_type`, workspace and agent scopes of that id. */
  scope_id?: string | undefined;
  /** Page size (the service's default applies when omitted; it must be at least 1). */
  limit?: number | undefined;
  /** The `next_cursor` of the previous page. */
  cursor?: string | undefined;
  /**
   * Only secrets carrying every one of these labels, e.g. `{ env: 'prod', team: 'core' }` (sent
   * as `label=env=prod,team=core`).
   */
  labels?: Record<string, string> | undefined;
  /** Only names starting with this, e.g. `'db/'`. */
  name_prefix?: string | undefined;
  /**
   * Only secrets expiring within this duration from now, e.g. `'30d'`, `'12h'` (units `s`, `m`,
   * `h`, `d`); already expired ones included.
   */
  expiring_within?: string | undefined;
  /**
   * Soft-deleted secrets (in their recovery window) instead of live ones; their metadata then
   * carries `deleted_at` and `purge_at` (see {@link RcrtClient.listDeletedSecrets}).
   */
  deleted?: boolean | undefined;
}

/** One page of secret metadata. */
export interface SecretPage {
  /** The secrets on this page, oldest first. */
  items: SecretMetadata[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  next_cursor: string | null;
}

/** One page of {@link RcrtClient.listDeletedSecrets}. */
export interface DeletedSecretPage {
  /** The soft-deleted secrets on this page. */
  items: DeletedSecretMetadata[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  next_cursor: string | null;
}

/** A decrypted secret, as returned by {@link RcrtClient.getSecret}. */
export interface DecryptedSecret {
  /** The plaintext value. Handle with care: never log it. */
  value: string;
  /** The version that was decrypted (the current one, unless another was asked for). */
  version: number;
}

/** Options of {@link RcrtClient.getSecret}. */
export interface GetSecretOptions {
  /** Decrypt this version, not the current one (see {@link RcrtClient.listSecretVersions}). */
  version?: number | undefined;
}

/**
 * The `idempotencyKey` option of the calls that write: {@link RcrtClient.createSecret},
 * {@link RcrtClient.updateSecret}, {@link RcrtClient.rollbackSecret},
 * {@link RcrtClient.createSecretVault} and {@link RcrtClient.setVaultSecret}.
 */
export interface IdempotencyOptions {
  /**
   * Sent as the `Idempotency-Key` header (1-255 printable ASCII characters, e.g. a UUID). Retrying
   * a write with the same key, after a timeout or a lost answer, returns the first answer (same
   * status and body) instead of a 409 `name_taken` or a second version, also across service
   * restarts. The same key with a different request (another route, name, scope, metadata or
   * `ifMatch`) rejects with 422 `idempotency_key_reused`. The service remembers a key for its
   * `IDEMPOTENCY_TTL` (24 h by default), per principal. The value is not compared: a retry
   * that changes only the value gets the first answer.
   */
  idempotencyKey?: string | undefined;
}

/**
 * Options of every call that stores values: {@link RcrtClient.createSecret},
 * {@link RcrtClient.updateSecret}, {@link RcrtClient.createSecretVault} and
 * {@link RcrtClient.setVaultSecret}.
 */
export interface ValueOptions {
  /**
   * Store an empty value (`''`) on purpose. The service refuses an empty value by default
   * (400 `empty_value`): it is far more often an unset variable read by mistake than a wanted
   * secret. With `true` the SDK sends `"allow_empty": true`; for a vault it covers every key of
   * the call. Otherwise it sends nothing extra.
   */
  allowEmpty?: boolean | undefined;
}

/** Options of {@link RcrtClient.createSecret}. */
export interface CreateSecretOptions extends ValueOptions, IdempotencyOptions {}

/** Options of {@link RcrtClient.setVaultSecret}. */
export interface SetVaultSecretOptions extends ValueOptions, IdempotencyOptions {}

/** Options of {@link RcrtClient.rollbackSecret}. */
export interface RollbackSecretOptions extends IdempotencyOptions {
  /**
   * Only roll back if the current version is still this one (a number or an entity tag, as for
   * {@link UpdateSecretOptions.ifMatch}); a stale one rejects with 412 `version_mismatch`.
   */
  ifMatch?: number | string | undefined;
}

/** Options of {@link RcrtClient.deleteSecret}. */
export interface DeleteSecretOptions {
  /**
   * Keep the secret restorable for this long: `'7d'`, `'12h'`, `'30m'`, `'90s'` (at most
   * `'90d'`); `'0'` deletes at once. Without it the service's `DELETE_RECOVERY_WINDOW` applies
   * (by default `0`: every version is shredded at once).
   */
  recoveryWindow?: string | undefined;
}

/** Options of {@link RcrtClient.updateSecret}. */
export interface UpdateSecretOptions extends ValueOptions, IdempotencyOptions {
  /**
   * Optimistic concurrency: only update if the current version is still this one. A number
   * (`3`) or an entity tag (`'"3"'`, as in the `ETag` the service sends). A stale version gives
   * a 412 `version_mismatch`.
   */
  ifMatch?: number | string | undefined;
}

/** A vault: a named set of keys in one workspace. It never contains the values. */
export interface Vault {
  /** The vault's id. */
  id: string;
  /** The vault's name, unique within its tenant and workspace. */
  name: string;
  /** The workspace the vault belongs to. */
  workspace: string;
  /** The vault's keys, sorted. */
  keys: string[];
}

/** A vault as {@link RcrtClient.listVaults} shows it: metadata only, without its keys. */
export interface VaultSummary {
  /** The vault's id. */
  id: string;
  /** The vault's name, unique within its tenant and workspace. */
  name: string;
  /** The workspace the vault belongs to. */
  workspace: string;
  /** When the vault was created (RFC 3339). */
  created_at: string;
}

/** Filters and paging for {@link RcrtClient.listVaults}. */
export interface ListVaultsQuery {
  /** Only vaults of this workspace. */
  workspace?: string | undefined;
  /** Page size (the service's default applies when omitted; it must be at least 1). */
  limit?: number | undefined;
  /** The `next_cursor` of the previous page. */
  cursor?: string | undefined;
}

/** One page of vault metadata. */
export interface VaultPage {
  /** The vaults on this page, ordered by id (oldest first). */
  items: VaultSummary[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  next_cursor: string | null;
}

/** Options of {@link RcrtClient.createSecretVault}. */
export interface CreateVaultOptions extends ValueOptions, IdempotencyOptions {
  /**
   * The vault's name: 1-64 letters, digits, `_`, `-` or `.`. Defaults to a generated
   * `vault-<random hex>`; required with `idempotencyKey` (a retry must send the same name).
   */
  name?: string | undefined;
}

/** Options for looking a vault up by name. */
export interface VaultLookupOptions {
  /**
   * The workspace to look the vault up in. Needed when the same vault name exists in several
   * workspaces and the vault is addressed by name rather than by id.
   */
  workspace?: string | undefined;
}

/**
 * A role a credential (JWT or service token) can carry:
 *
 * - `secrets.read`: list secrets and vaults, read metadata and vault metadata.
 * - `secrets.decrypt`: read values (`getSecret`, `getSecretsFromVault`).
 * - `secrets.write`: create, update and delete secrets and vaults.
 * - `secrets.admin`: the tenant's administrator (every workspace, global secrets, every token).
 * - `tokens.create`: mint service tokens no broader than the caller.
 * - `rcrt.operator`: the deployment-wide KEK endpoints.
 */
export type Role =
  | 'secrets.read'
  | 'secrets.decrypt'
  | 'secrets.write'
  | 'secrets.admin'
  | 'tokens.create'
  | 'rcrt.operator'
  | (string & {});

/** Whether a service token is usable: `active`, or no longer (`expired`, `revoked`). */
export type TokenStatus = 'active' | 'expired' | 'revoked';

/**
 * A service token's metadata, exactly as the service returns it. It never contains the token
 * itself (the service keeps only a hash of it).
 */
export interface TokenMetadata {
  /** The token's id (a UUID; the token's `rcrt_<32 hex>` part is the same 16 bytes). */
  id: string;
  /** The label given at creation. */
  name: string;
  /** The tenant the token belongs to (the tenant of the credential that minted it). */
  tenant: string;
  /** The principal the token acts as (written to the audit log's `user_id`). */
  principal: string;
  /** The token's roles. */
  roles: Role[];
  /** The workspaces the token may use (admins reach every workspace regardless). */
  workspaces: string[];
  /** The principal that minted the token. */
  created_by: string;
  /** When the token was minted (RFC 3339). */
  created_at: string;
  /** When the token stops working (RFC 3339); `null` for a token that never expires. */
  expires_at: string | null;
  /** When the token was revoked (RFC 3339); `null` while it is not revoked. */
  revoked_at: string | null;
  /** `active`, `expired` or `revoked`, as of the request. */
  status: TokenStatus;
}

/**
 * A freshly minted service token: the token itself, shown this once, and its metadata.
 * Store `token` as a secret (never log it); the service cannot show it again.
 */
export interface CreatedToken extends TokenMetadata {
  /** The token, `rcrt_<32 hex>_<64 hex>`. Pass it as `token` to {@link createClient}. */
  token: string;
}

/** The input of {@link RcrtClient.createToken}. */
export interface CreateTokenInput {
  /** A label for people: 1-128 characters, no control characters. */
  name: string;
  /**
   * The token's roles (at least one), a subset of the caller's: minting never escalates
   * (403 `forbidden` otherwise).
   */
  roles: Role[];
  /**
   * The workspaces the token may use; within the caller's own unless the caller has
   * `secrets.admin`. None by default.
   */
  workspaces?: string[] | undefined;
  /**
   * The lifetime: seconds (`3600`) or a duration such as `'30d'`, `'12h'`, `'90m'`. Defaults to
   * 30 days (or what remains of the caller's service token, if less); at most 366 days, and
   * never beyond the expiry of the caller's own service token.
   */
  ttl?: string | number | undefined;
  /**
   * The principal the token acts as; the caller's own by default. Only `secrets.admin` callers
   * may name another.
   */
  principal?: string | undefined;
}

/** Paging for {@link RcrtClient.listTokens}. */
export interface ListTokensQuery {
  /** Page size (the service's default applies when omitted; it must be at least 1). */
  limit?: number | undefined;
  /** The `next_cursor` of the previous page. */
  cursor?: string | undefined;
}

/** One page of service token metadata. */
export interface TokenPage {
  /** The tokens on this page, ordered by id. */
  items: TokenMetadata[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  next_cursor: string | null;
}

/** The response object the SDK needs from a `fetch` implementation. */
export interface FetchResponseLike {
  /** The HTTP status. */
  readonly status: number;
  /** The response headers. */
  readonly headers: { get(name: string): string | null };
  /** Reads the body as text. */
  text(): Promise<string>;
}

/** The request options the SDK passes to its `fetch` implementation. */
export interface FetchInitLike {
  /** The HTTP method. */
  method: string;
  /** The request headers. */
  headers: Record<string, string>;
  /** The JSON body, if any. */
  body?: string;
  /** Aborts the request when {@link ClientOptions.timeoutMs} elapses. */
  signal?: AbortSignal;
}

/**
 * A `fetch` implementation: the global `fetch` of Node.js 18+, Deno, Bun and browsers fits, as
 * does any wrapper with the same call shape.
 */
export type FetchLike = (url: string, init: FetchInitLike) => Promise<FetchResponseLike>;

/**
 * A bearer token, or a function returning one (called before every request, so it can refresh
 * short-lived tokens). Either kind the service accepts works: a JWT from an identity provider or
 * a service token (`rcrt_...`); the SDK never decodes it. Whitespace around it (e.g. the line
 * break of a token file) is removed. Return `undefined` or an empty string to send no
 * `Authorization` header.
 */
export type TokenSource = string | (() => string | undefined | Promise<string | undefined>);

/** Options of {@link createClient}. */
export interface ClientOptions {
  /**
   * The service's base URL, e.g. `http://127.0.0.1:8081` (a path prefix such as
   * `https://gw.example/rcrt` is kept).
   */
  baseUrl: string;
  /**
   * A JWT or a service token (`rcrt_...`), sent as `Authorization: Bearer <token>`. Needed when
   * the service runs with `AUTH_MODE=jwt`, `token` or `jwt,token`; not needed when
   * authentication is disabled.
   */
  token?: TokenSource | undefined;
  /** The `fetch` to use. Defaults to `globalThis.fetch`. */
  fetch?: FetchLike | undefined;
  /**
   * Abort a request that has not completed after this many milliseconds (an
   * {@link RcrtError} with code `timeout`). No timeout by default.
   */
  timeoutMs?: number | undefined;
}

/**
 * Error codes the service sends (e.g. `empty_value`: an empty value sent without
 * {@link ValueOptions.allowEmpty}), plus the SDK's own codes for failures that have no HTTP
 * response (`status` 0) or an unusable one:
 *
 * - `network_error`: the request could not be sent or no response arrived (status 0).
 * - `timeout`: {@link ClientOptions.timeoutMs} elapsed (status 0).
 * - `invalid_argument`: the SDK refused an argument before sending anything (status 0).
 * - `invalid_response`: a success response whose body was not the expected JSON.
 * - `unexpected_response`: an error response without the service's JSON error body (e.g. from a
 *   proxy).
 */
export type RcrtErrorCode =
  | 'invalid_request'
  | 'invalid_json'
  | 'invalid_id'
  | 'reason_required'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'name_taken'
  | 'ambiguous_vault'
  | 'version_mismatch'
  | 'version_not_found'
  | 'version_destroyed'
  | 'current_version'
  | 'expired'
  | 'idempotency_key_reused'
  | 'payload_too_large'
  | 'value_too_large'
  | 'empty_value'
  | 'unsupported_media_type'
  | 'request_timeout'
  | 'host_not_allowed'
  | 'store_unavailable'
  | 'kek_unavailable'
  | 'decrypt_failed'
  | 'internal'
  | 'network_error'
  | 'timeout'
  | 'invalid_argument'
  | 'invalid_response'
  | 'unexpected_response'
  | (string & {});

/** The fields of an {@link RcrtError}. */
export interface RcrtErrorInit {
  /** The HTTP status, or 0 when there was no response. */
  status: number;
  /** The stable error code. */
  code: RcrtErrorCode;
  /** A human-readable message. */
  message: string;
  /** The `x-request-id` of the response, if there was one. */
  requestId?: string | undefined;
  /** The underlying error (e.g. the `fetch` failure). */
  cause?: unknown;
}

/**
 * Every failure of an SDK call: an error response from the service (`status` is its HTTP
 * status and `code` the service's stable code, e.g. 404 `not_found`), or a failure without a
 * response (`status` 0, `code` `network_error`, `timeout` or `invalid_argument`).
 *
 * Branch on `code`, not on `message`: messages are for people and may change.
 *
 * @example
 * ```ts
 * try {
 *   await client.getSecretMetadata(id);
 * } catch (e) {
 *   if (e instanceof RcrtError && e.code === 'not_found') { ... }
 *   else throw e;
 * }
 * ```
 */
export class RcrtError extends Error {
  /** The HTTP status, or 0 when there was no response. */
  readonly status: number;
  /** The stable error code, e.g. `not_found`, `name_taken`, `version_mismatch`. */
  readonly code: RcrtErrorCode;
  /** The service's `x-request-id` for this request (quote it when reporting a problem). */
  readonly requestId: string | undefined;

  /** Creates an error; the SDK does this for you. */
  constructor(init: RcrtErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'RcrtError';
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId;
  }
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface RequestSpec {
  method: Method;
  segments: readonly string[];
  query?: Record<string, string | number | undefined> | undefined;
  body?: unknown;
  headers?: Record<string, string> | undefined;
}

/** A header value the service can read: visible ASCII, spaces and tabs. */
const HEADER_SAFE = /^[\t\x20-\x7e]*$/;

function invalidArgument(message: string): RcrtError {
  return new RcrtError({ status: 0, code: 'invalid_argument', message });
}

/**
 * One path segment, percent-encoded. Empty, `.` and `..` are refused: URL parsing would drop
 * or resolve them and send the request to a different endpoint (e.g. a key named `..` would
 * address the vault itself).
 */
function segment(what: string, value: string): string {
  if (typeof value !== 'string' || value === '') {
    throw invalidArgument(`${what} must be a non-empty string`);
  }
  if (value === '.' || value === '..') {
    throw invalidArgument(`${what} '${value}' cannot be addressed in a URL path`);
  }
  return encodeURIComponent(value);
}

/** The path of one key of a vault: `secrets/vaults/{idOrName}/keys/{key}`. */
function vaultKeySegments(vaultIdOrName: string, key: string): string[] {
  return [
    'secrets',
    'vaults',
    segment('vault id or name', vaultIdOrName),
    'keys',
    segment('vault key', key),
  ];
}

/**
 * The body of a call that stores values, with `allow_empty: true` added only when the caller
 * asked for it: a service that predates the flag then sees the same body as before.
 */
function withAllowEmpty(
  body: Record<string, unknown>,
  options: ValueOptions,
): Record<string, unknown> {
  const allow = options.allowEmpty;
  if (allow === undefined || allow === false) return body;
  if (allow !== true) throw invalidArgument('allowEmpty must be true or false');
  return { ...body, allow_empty: true };
}

/**
 * Adds `Idempotency-Key` to `headers` when `options.idempotencyKey` is given: 1-255 printable
 * ASCII characters, not starting or ending with a space (HTTP would drop it, and a retry would
 * no longer carry the same key). Refused before anything is sent otherwise.
 */
function withIdempotencyKey(
  headers: Record<string, string>,
  options: IdempotencyOptions,
): Record<string, string> {
  const key = options.idempotencyKey;
  if (key === undefined) return headers;
  if (
    typeof key !== 'string' ||
    key.length < 1 ||
    key.length > 255 ||
    !/^[\x20-\x7e]+$/.test(key) ||
    key.startsWith(' ') ||
    key.endsWith(' ')
  ) {
    throw invalidArgument(
      'idempotencyKey must be 1-255 printable ASCII characters (no leading or trailing space)',
    );
  }
  return { ...headers, 'idempotency-key': key };
}

/** Adds `If-Match` for a version number (`3`) or an entity tag (`'"3"'`). */
function withIfMatch(
  headers: Record<string, string>,
  ifMatch: number | string | undefined,
): Record<string, string> {
  if (ifMatch === undefined) return headers;
  const tag = String(ifMatch).trim();
  if (!HEADER_SAFE.test(tag) || tag === '') {
    throw invalidArgument('ifMatch must be a version number such as 3 or "3"');
  }
  return { ...headers, 'if-match': tag.includes('"') ? tag : `"${tag}"` };
}

/** A version number as the service takes it: a positive integer. */
function versionNumber(what: string, version: unknown): number {
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw invalidArgument(`${what} must be a positive integer`);
  }
  return version;
}

/**
 * Copies the metadata fields that are given (not `undefined`) into `body`, with a `Date` for
 * `expires_at` turned into RFC 3339.
 */
function withMetadata(
  body: Record<string, unknown>,
  fields: SecretMetadataPatch,
): Record<string, unknown> {
  if (fields.description !== undefined) body.description = fields.description;
  if (fields.labels !== undefined) body.labels = fields.labels;
  if (fields.expires_at !== undefined) {
    const at = fields.expires_at;
    if (at instanceof Date) {
      if (Number.isNaN(at.getTime())) throw invalidArgument('expires_at is an invalid Date');
      body.expires_at = at.toISOString();
    } else {
      body.expires_at = at;
    }
  }
  if (fields.max_versions !== undefined) body.max_versions = fields.max_versions;
  return body;
}

/**
 * The `label` filter: `k=v,k2=v2`. A key holding `=` or `,`, or a value holding `,`, cannot be
 * written this way (and the service allows no such label): refused.
 */
function labelFilter(labels: Record<string, string> | undefined): string | undefined {
  if (labels === undefined) return undefined;
  if (!isObject(labels)) throw invalidArgument('labels must be an object of strings');
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (typeof v !== 'string' || k === '' || /[=,]/.test(k) || v.includes(',')) {
      throw invalidArgument(
        'a label filter needs a non-empty key without "=" or ",", and a string value without ","',
      );
    }
    parts.push(`${k}=${v}`);
  }
  return parts.length > 0 ? parts.join(',') : undefined;
}

/**
 * What the SDK adds to the service's `empty_value` message, which names the API's
 * `"allow_empty": true` body field rather than this SDK's option.
 */
const EMPTY_VALUE_HINT = "with this SDK: pass { allowEmpty: true } in the call's options";

function randomHex(bytes: number): string {
  const buf = new Uint8Array(bytes);
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } })
    .crypto;
  if (c?.getRandomValues) {
    c.getRandomValues(buf);
  } else {
    for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeCause(e: unknown): string {
  if (e instanceof Error) {
    const inner = (e as { cause?: unknown }).cause;
    if (inner instanceof Error && inner.message) return `${e.message}: ${inner.message}`;
    return e.message;
  }
  return String(e);
}

/**
 * A client for one RCRT Secrets service. Create it with {@link createClient}.
 *
 * Every method returns a promise that rejects with an {@link RcrtError} on any failure.
 * Methods that address a secret take its id; methods that address a vault take its id or name.
 */
export class RcrtClient {
  readonly #baseUrl: string;
  readonly #token: TokenSource | undefined;
  readonly #fetch: FetchLike;
  readonly #timeoutMs: number | undefined;

  /** Prefer {@link createClient}. */
  constructor(options: ClientOptions) {
    if (!isObject(options) || typeof options.baseUrl !== 'string' || options.baseUrl === '') {
      throw invalidArgument('createClient needs { baseUrl }');
    }
    let parsed: URL;
    try {
      parsed = new URL(options.baseUrl);
    } catch {
      // No cause: the URL parser's error carries the whole input, credentials and all.
      throw invalidArgument('baseUrl is not a valid URL');
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw invalidArgument('baseUrl must be an http: or https: URL');
    }
    this.#baseUrl = `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`;
    this.#token = options.token;
    const f = options.fetch ?? (globalThis.fetch as unknown as FetchLike | undefined);
    if (typeof f !== 'function') {
      throw invalidArgument('no fetch available: pass { fetch } to createClient');
    }
    this.#fetch = f;
    if (options.timeoutMs !== undefined && !(options.timeoutMs > 0)) {
      throw invalidArgument('timeoutMs must be a positive number');
    }
    this.#timeoutMs = options.timeoutMs;
  }

  /** The base URL requests go to (without a trailing slash). */
  get baseUrl(): string {
    return this.#baseUrl;
  }

  // ---------------------------------------------------------------------------------------
  // Secrets
  // ---------------------------------------------------------------------------------------

  /**
   * Creates a secret (`POST /secrets`).
   *
   * @param input - Name, value and scope; optionally `description`, `labels`, `expires_at`
   *   and `max_versions`.
   * @param options - `allowEmpty` to store an empty value; `idempotencyKey` to make a retry
   *   return the first answer.
   * @returns The new secret's metadata (version 1).
   * @throws {@link RcrtError} `name_taken` (409) if the name is used in that scope (also by a
   *   soft-deleted secret still in its recovery window), `invalid_request` (400) for a bad name,
   *   scope, description, label, expiry or version cap, `empty_value` (400) for an empty value
   *   without `allowEmpty`, `value_too_large` (413), `forbidden` (403) without `secrets.write`
   *   on the scope, `idempotency_key_reused` (422) for a key sent before with another request.
   */
  async createSecret(
    input: CreateSecretInput,
    options: CreateSecretOptions = {},
  ): Promise<SecretMetadata> {
    if (!isObject(input)) throw invalidArgument('createSecret needs { name, value, scope_type }');
    const body: Record<string, unknown> = {
      name: input.name,
      value: input.value,
      scope_type: input.scope_type,
    };
    if (input.scope_id !== undefined) body.scope_id = input.scope_id;
    withMetadata(body, input);
    return this.#json<SecretMetadata>({
      method: 'POST',
      segments: ['secrets'],
      body: withAllowEmpty(body, options),
      headers: withIdempotencyKey({}, options),
    });
  }

  /**
   * Lists secret metadata the caller may read, one page at a time (`GET /secrets`).
   *
   * @param query - Optional filters (scope, `labels`, `name_prefix`, `expiring_within`,
   *   `deleted`), page size and cursor. Every filter given must match.
   * @returns One page; follow `next_cursor` until it is `null` for the rest.
   * @throws {@link RcrtError} `invalid_request` (400) for a bad filter, limit or cursor;
   *   `invalid_argument` (status 0) for a label filter that cannot be sent (see
   *   {@link ListSecretsQuery.labels}).
   */
  async listSecrets(query: ListSecretsQuery = {}): Promise<SecretPage> {
    return this.#json<SecretPage>({
      method: 'GET',
      segments: ['secrets'],
      query: {
        scope_type: query.scope_type,
        scope_id: query.scope_id,
        label: labelFilter(query.labels),
        name_prefix: query.name_prefix,
        expiring_within: query.expiring_within,
        deleted: query.deleted === true ? 'true' : undefined,
        limit: query.limit,
        cursor: query.cursor,
      },
    });
  }

  /**
   * Lists soft-deleted secrets, still restorable, one page at a time
   * (`GET /secrets?deleted=true`).
   *
   * @param query - The same filters and paging as {@link listSecrets} (`deleted` is implied).
   * @returns One page of metadata with `deleted_at` and `purge_at`.
   */
  async listDeletedSecrets(
    query: Omit<ListSecretsQuery, 'deleted'> = {},
  ): Promise<DeletedSecretPage> {
    return (await this.listSecrets({ ...query, deleted: true })) as DeletedSecretPage;
  }

  /**
   * Decrypts a secret's current version (`POST /secrets/{id}/decrypt`). The service records
   * the read, with `reason`, in its audit log before it returns the value.
   *
   * @param id - The secret's id.
   * @param reason - Why the value is read (required, recorded in the audit log).
   * @param options - `version` to decrypt an older version (audited with its number).
   * @returns The value and its version.
   * @throws {@link RcrtError} `reason_required` (400) for an empty reason, `not_found` (404)
   *   for an unknown secret or one the caller may not decrypt, `version_not_found` (404) for a
   *   version the secret never had, `version_destroyed` (410) for a destroyed one, `expired`
   *   (410) once the secret's `expires_at` has passed.
   */
  async getSecret(
    id: string,
    reason: string,
    options: GetSecretOptions = {},
  ): Promise<DecryptedSecret> {
    const body: Record<string, unknown> = { reason };
    if (options.version !== undefined) body.version = versionNumber('version', options.version);
    return this.#json<DecryptedSecret>({
      method: 'POST',
      segments: ['secrets', segment('secret id', id), 'decrypt'],
      body,
    });
  }

  /**
   * Reads a secret's metadata, never its value (`GET /secrets/{id}`).
   *
   * @param id - The secret's id.
   * @throws {@link RcrtError} `not_found` (404), `invalid_id` (400) for a malformed id.
   */
  async getSecretMetadata(id: string): Promise<SecretMetadata> {
    return this.#json<SecretMetadata>({
      method: 'GET',
      segments: ['secrets', segment('secret id', id)],
    });
  }

  /**
   * Writes a new version of a secret under a fresh data key (`PUT /secrets/{id}`).
   *
   * @param id - The secret's id.
   * @param value - The new value.
   * @param options - `ifMatch` to update only if the current version is still the given one;
   *   `allowEmpty` to store an empty value; `idempotencyKey` to make a retry return the first
   *   answer instead of writing a second version.
   * @returns The updated metadata (its `version` is the new version).
   * @throws {@link RcrtError} `version_mismatch` (412) when `ifMatch` is stale, `not_found`
   *   (404), `empty_value` (400) for an empty value without `allowEmpty`, `value_too_large`
   *   (413), `idempotency_key_reused` (422).
   */
  async updateSecret(
    id: string,
    value: string,
    options: UpdateSecretOptions = {},
  ): Promise<SecretMetadata> {
    return this.#json<SecretMetadata>({
      method: 'PUT',
      segments: ['secrets', segment('secret id', id)],
      body: withAllowEmpty({ value }, options),
      headers: withIdempotencyKey(withIfMatch({}, options.ifMatch), options),
    });
  }

  /**
   * Changes a secret's description, labels, expiry or version cap without writing a version
   * (`PATCH /secrets/{id}`). Only the fields given change.
   *
   * @param id - The secret's id.
   * @param patch - `description`, `labels` (replaces the whole set), `expires_at` (`null`: no
   *   expiry), `max_versions` (`null`: the service's default).
   * @returns The secret's metadata after the change.
   * @throws {@link RcrtError} `not_found` (404), `invalid_request` (400) for a bad field.
   */
  async updateSecretMetadata(id: string, patch: SecretMetadataPatch): Promise<SecretMetadata> {
    if (!isObject(patch)) throw invalidArgument('updateSecretMetadata needs a patch object');
    return this.#json<SecretMetadata>({
      method: 'PATCH',
      segments: ['secrets', segment('secret id', id)],
      body: withMetadata({}, patch),
    });
  }

  /**
   * Lists a secret's versions, newest first, one page at a time (`GET /secrets/{id}/versions`):
   * number, time, author and state (`current`, `kept`, `destroyed`); never a value.
   *
   * @param id - The secret's id.
   * @param query - Optional page size and cursor.
   * @returns One page; follow `next_cursor` until it is `null` for the rest.
   * @throws {@link RcrtError} `not_found` (404).
   */
  async listSecretVersions(id: string, query: ListVersionsQuery = {}): Promise<SecretVersionPage> {
    return this.#json<SecretVersionPage>({
      method: 'GET',
      segments: ['secrets', segment('secret id', id), 'versions'],
      query: { limit: query.limit, cursor: query.cursor },
    });
  }

  /**
   * Rolls a secret back (`POST /secrets/{id}/rollback`): writes a new current version holding
   * an older version's value, sealed again under a fresh data key.
   *
   * @param id - The secret's id.
   * @param version - The version whose value becomes current again.
   * @param options - `ifMatch` to roll back only if the current version is still the given
   *   one; `idempotencyKey` to make a retry return the first answer.
   * @returns The metadata with the new version.
   * @throws {@link RcrtError} `version_not_found` (404), `version_destroyed` (410),
   *   `version_mismatch` (412), `idempotency_key_reused` (422), `not_found` (404).
   */
  async rollbackSecret(
    id: string,
    version: number,
    options: RollbackSecretOptions = {},
  ): Promise<SecretMetadata> {
    return this.#json<SecretMetadata>({
      method: 'POST',
      segments: ['secrets', segment('secret id', id), 'rollback'],
      body: { version: versionNumber('version', version) },
      headers: withIdempotencyKey(withIfMatch({}, options.ifMatch), options),
    });
  }

  /**
   * Destroys one version (`POST /secrets/{id}/versions/{n}/destroy`): its data key and sealed
   * value are deleted (crypto-shredded); its record stays, with state `destroyed`. Destroying a
   * destroyed version again succeeds.
   *
   * @param id - The secret's id.
   * @param version - The version to destroy (not the current one).
   * @throws {@link RcrtError} `current_version` (409) for the current version (write or roll
   *   back first), `not_found` (404) for an unknown secret or version.
   */
  async destroySecretVersion(id: string, version: number): Promise<void> {
    const n = versionNumber('version', version);
    await this.#request({
      method: 'POST',
      segments: ['secrets', segment('secret id', id), 'versions', String(n), 'destroy'],
    });
  }

  /**
   * Deletes a secret (`DELETE /secrets/{id}`). The audit trail stays.
   *
   * Without a recovery window (the service's default), every version is shredded at once and
   * the promise resolves to `undefined`. With one (`options.recoveryWindow`, or the service's
   * `DELETE_RECOVERY_WINDOW`), the secret disappears from reads, listings and vaults but can be
   * restored with {@link restoreSecret} until `purge_at`; the promise resolves to
   * `{ id, deleted_at, purge_at }`. Its name stays taken meanwhile.
   *
   * @param id - The secret's id.
   * @param options - `recoveryWindow`, e.g. `'7d'` (`'0'` deletes at once).
   * @throws {@link RcrtError} `not_found` (404), `invalid_request` (400) for a bad window.
   */
  async deleteSecret(
    id: string,
    options: DeleteSecretOptions = {},
  ): Promise<SecretDeletion | undefined> {
    const spec: RequestSpec = {
      method: 'DELETE',
      segments: ['secrets', segment('secret id', id)],
      query: { recovery_window: options.recoveryWindow },
    };
    const answer = await this.#request(spec);
    if (answer.status === 204 || answer.text === '') return undefined;
    return parseObject<SecretDeletion>(spec, answer, (v) => typeof v.purge_at === 'string');
  }

  /**
   * Brings back a soft-deleted secret (`POST /secrets/{id}/restore`) before its `purge_at`.
   *
   * @param id - The secret's id.
   * @returns Its metadata.
   * @throws {@link RcrtError} `not_found` (404) for a secret that is not soft-deleted, or
   *   already purged.
   */
  async restoreSecret(id: string): Promise<SecretMetadata> {
    return this.#json<SecretMetadata>({
      method: 'POST',
      segments: ['secrets', segment('secret id', id), 'restore'],
    });
  }

  // ---------------------------------------------------------------------------------------
  // Vaults
  // ---------------------------------------------------------------------------------------

  /**
   * Creates a vault in a workspace with its first keys (`POST /secrets/vaults`). Each value is
   * stored as its own encrypted secret.
   *
   * @param workspace - The workspace the vault belongs to.
   * @param secrets - Keys and values, e.g. `{ API_KEY: 'secret-value' }`. Keys are 1-63
   *   letters, digits, `_`, `-` or `.`.
   * @param options - `name` for the vault (defaults to a generated `vault-<random hex>`);
   *   `allowEmpty` to store empty values (for any key of this call); `idempotencyKey` (with a
   *   `name`) to make a retry return the first answer.
   * @returns The vault (id, name, workspace and keys; never the values).
   * @throws {@link RcrtError} `name_taken` (409) if the workspace has a vault of that name,
   *   `invalid_request` (400) for a bad name, key or workspace, `empty_value` (400) when a key
   *   has an empty value and `allowEmpty` is not set (nothing is created then),
   *   `idempotency_key_reused` (422); `invalid_argument` (status 0) for an `idempotencyKey`
   *   without a `name` (a generated name would differ on every retry).
   */
  async createSecretVault(
    workspace: string,
    secrets: Record<string, string>,
    options: CreateVaultOptions = {},
  ): Promise<Vault> {
    if (options.idempotencyKey !== undefined && options.name === undefined) {
      throw invalidArgument(
        'createSecretVault with idempotencyKey needs { name } (a generated one differs on a retry)',
      );
    }
    const name = options.name ?? `vault-${randomHex(8)}`;
    return this.#json<Vault>({
      method: 'POST',
      segments: ['secrets', 'vaults'],
      body: withAllowEmpty({ workspace, name, secrets: secrets ?? {} }, options),
      headers: withIdempotencyKey({}, options),
    });
  }

  /**
   * Lists the vaults the caller may read, one page at a time (`GET /secrets/vaults`): every
   * vault of the tenant for a `secrets.admin` caller, otherwise those of the caller's
   * workspaces. Metadata only: no keys, no values.
   *
   * @param query - Optional `workspace` filter, page size and cursor.
   * @returns One page; follow `next_cursor` until it is `null` for the rest.
   * @throws {@link RcrtError} `invalid_request` (400) for a bad workspace, limit or cursor,
   *   `forbidden` (403) without `secrets.read`.
   */
  async listVaults(query: ListVaultsQuery = {}): Promise<VaultPage> {
    return this.#json<VaultPage>({
      method: 'GET',
      segments: ['secrets', 'vaults'],
      query: { workspace: query.workspace, limit: query.limit, cursor: query.cursor },
    });
  }

  /**
   * Reads every value of a vault at once (`GET /secrets/vault/{idOrName}`). The service
   * records each read, with `reason`, in its audit log before it returns any value.
   *
   * The reason travels in the `X-Access-Reason` header, so it must be printable ASCII.
   *
   * @param vaultIdOrName - The vault's id, or its name.
   * @param reason - Why the values are read (required, recorded in the audit log).
   * @param options - `workspace` to disambiguate a name used in several workspaces.
   * @returns A map from key to value.
   * @throws {@link RcrtError} `reason_required` (400) for an empty reason, `not_found` (404)
   *   for an unknown vault or one the caller may not decrypt, `ambiguous_vault` (409) when a
   *   name matches vaults in several workspaces and no `workspace` is given,
   *   `invalid_argument` (status 0) for a reason that cannot be sent in a header.
   */
  async getSecretsFromVault(
    vaultIdOrName: string,
    reason: string,
    options: VaultLookupOptions = {},
  ): Promise<Record<string, string>> {
    const headers: Record<string, string> = {};
    if (reason !== undefined && reason !== null) {
      const text = String(reason);
      if (!HEADER_SAFE.test(text)) {
        throw invalidArgument(
          'the reason for a vault read is sent in the X-Access-Reason header and must be printable ASCII',
        );
      }
      headers['x-access-reason'] = text;
    }
    return this.#json<Record<string, string>>({
      method: 'GET',
      segments: ['secrets', 'vault', segment('vault id or name', vaultIdOrName)],
      query: { workspace: options.workspace },
      headers,
    });
  }

  /**
   * Reads a vault's metadata: id, name, workspace and keys, never the values
   * (`GET /secrets/vaults/{idOrName}`).
   *
   * @param vaultIdOrName - The vault's id, or its name.
   * @param options - `workspace` to disambiguate a name used in several workspaces.
   * @throws {@link RcrtError} `not_found` (404), `ambiguous_vault` (409) when a name matches
   *   vaults in several workspaces and no `workspace` is given.
   */
  async getVault(vaultIdOrName: string, options: VaultLookupOptions = {}): Promise<Vault> {
    return this.#json<Vault>({
      method: 'GET',
      segments: ['secrets', 'vaults', segment('vault id or name', vaultIdOrName)],
      query: { workspace: options.workspace },
    });
  }

  /**
   * Adds a key to a vault, or replaces its value with a new version
   * (`PUT /secrets/vaults/{idOrName}/keys/{key}`).
   *
   * The service resolves names without a workspace here, so address a vault whose name is
   * used in several workspaces by its id (by that name it is a 409 `ambiguous_vault`).
   *
   * @param vaultIdOrName - The vault's id, or its name.
   * @param key - The key (1-63 letters, digits, `_`, `-` or `.`).
   * @param value - The value.
   * @param options - `allowEmpty` to store an empty value; `idempotencyKey` to make a retry
   *   return the first answer instead of writing a second version.
   * @returns The vault with its keys after the change.
   * @throws {@link RcrtError} `not_found` (404), `invalid_request` (400) for a bad key,
   *   `empty_value` (400) for an empty value without `allowEmpty`, `ambiguous_vault` (409) for
   *   a name used in several workspaces, `idempotency_key_reused` (422).
   */
  async setVaultSecret(
    vaultIdOrName: string,
    key: string,
    value: string,
    options: SetVaultSecretOptions = {},
  ): Promise<Vault> {
    return this.#json<Vault>({
      method: 'PUT',
      segments: vaultKeySegments(vaultIdOrName, key),
      body: withAllowEmpty({ value }, options),
      headers: withIdempotencyKey({}, options),
    });
  }

  /**
   * Removes a key from a vault; its secret is deleted
   * (`DELETE /secrets/vaults/{idOrName}/keys/{key}`).
   *
   * @param vaultIdOrName - The vault's id, or its name.
   * @param key - The key.
   * @throws {@link RcrtError} `not_found` (404) for an unknown vault or key.
   */
  async deleteVaultSecret(vaultIdOrName: string, key: string): Promise<void> {
    await this.#request({
      method: 'DELETE',
      segments: vaultKeySegments(vaultIdOrName, key),
    });
  }

  /**
   * Deletes a vault and every key in it (`DELETE /secrets/vaults/{idOrName}`).
   *
   * @param vaultIdOrName - The vault's id, or its name.
   * @throws {@link RcrtError} `not_found` (404).
   */
  async deleteVault(vaultIdOrName: string): Promise<void> {
    await this.#request({
      method: 'DELETE',
      segments: ['secrets', 'vaults', segment('vault id or name', vaultIdOrName)],
    });
  }

  // ---------------------------------------------------------------------------------------
  // Service tokens
  // ---------------------------------------------------------------------------------------

  /**
   * Mints a service token (`POST /auth/tokens`), no broader than the caller's credential: its
   * roles a subset of the caller's, its workspaces within the caller's, its principal the
   * caller's own unless the caller has `secrets.admin`, and its expiry no later than that of the
   * service token the caller uses (a JWT caller has no such limit).
   *
   * The token is in the answer only: the service keeps a hash of it and cannot show it again.
   * Store it as a secret and never log it.
   *
   * @param input - Name, roles, and optionally workspaces, lifetime and principal.
   * @returns The token and its metadata.
   * @throws {@link RcrtError} `forbidden` (403) without `tokens.create` or `secrets.admin`, or
   *   when the token would be broader than the caller; `invalid_request` (400) for a bad name,
   *   role, workspace or ttl.
   */
  async createToken(input: CreateTokenInput): Promise<CreatedToken> {
    if (!isObject(input)) throw invalidArgument('createToken needs { name, roles }');
    const body: Record<string, unknown> = { name: input.name, roles: input.roles };
    if (input.workspaces !== undefined) body.workspaces = input.workspaces;
    if (input.ttl !== undefined) body.ttl = input.ttl;
    if (input.principal !== undefined) body.principal = input.principal;
    return this.#json<CreatedToken>(
      { method: 'POST', segments: ['auth', 'tokens'], body },
      (v) => typeof v.token === 'string' && v.token !== '',
    );
  }

  /**
   * Lists service token metadata, one page at a time (`GET /auth/tokens`): every token of the
   * tenant for a `secrets.admin` caller, otherwise the tokens the caller minted or acts as.
   * Never the tokens themselves.
   *
   * @param query - Optional page size and cursor.
   * @returns One page; follow `next_cursor` until it is `null` for the rest.
   * @throws {@link RcrtError} `invalid_request` (400) for a bad limit or cursor.
   */
  async listTokens(query: ListTokensQuery = {}): Promise<TokenPage> {
    return this.#json<TokenPage>({
      method: 'GET',
      segments: ['auth', 'tokens'],
      query: { limit: query.limit, cursor: query.cursor },
    });
  }

  /**
   * Revokes a service token (`DELETE /auth/tokens/{id}`); requests made with it fail with 401
   * from then on. A `secrets.admin` caller may revoke any token of the tenant, anyone else the
   * tokens they minted or act as. Revoking a revoked token succeeds.
   *
   * @param id - The token's id (from {@link CreatedToken.id} or {@link listTokens}), not the
   *   token itself.
   * @throws {@link RcrtError} `not_found` (404) for an unknown token or one the caller may not
   *   revoke, `invalid_id` (400) for a malformed id.
   */
  async revokeToken(id: string): Promise<void> {
    if (typeof id === 'string' && id.trim().startsWith('rcrt_')) {
      // Refused before it reaches a URL (and so a proxy's log, or an error message).
      throw invalidArgument("revokeToken takes the token's id, not the token itself");
    }
    await this.#request({
      method: 'DELETE',
      segments: ['auth', 'tokens', segment('token id', id)],
    });
  }

  // ---------------------------------------------------------------------------------------
  // Transport
  // ---------------------------------------------------------------------------------------

  /**
   * Sends `spec` and parses the answer as a JSON object; `expected`, if given, must hold for
   * it. The body is never quoted in an error: it may hold secret values or a minted token.
   */
  async #json<T>(
    spec: RequestSpec,
    expected?: (body: Record<string, unknown>) => boolean,
  ): Promise<T> {
    return parseObject<T>(spec, await this.#request(spec), expected);
  }

  async #request(
    spec: RequestSpec,
  ): Promise<{ status: number; text: string; requestId: string | undefined }> {
    const path = `/${spec.segments.join('/')}`;
    let url = `${this.#baseUrl}${path}`;
    if (spec.query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(spec.query)) {
        if (v !== undefined) params.append(k, String(v));
      }
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    const route = `${spec.method} ${path}`;

    const headers: Record<string, string> = { accept: 'application/json', ...spec.headers };
    const raw = typeof this.#token === 'function' ? await this.#token() : this.#token;
    // Neither a JWT nor a service token contains whitespace: what surrounds one is the line
    // break of a token file, which would otherwise make the header invalid.
    const token = typeof raw === 'string' ? raw.trim() : raw;
    if (token) {
      if (!HEADER_SAFE.test(token)) throw invalidArgument('token must be printable ASCII');
      headers.authorization = `Bearer ${token}`;
    }
    const init: FetchInitLike = { method: spec.method, headers };
    if (spec.body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(spec.body);
    }
    if (this.#timeoutMs !== undefined) init.signal = AbortSignal.timeout(this.#timeoutMs);

    let response: FetchResponseLike;
    let text: string;
    try {
      response = await this.#fetch(url, init);
      text = await response.text();
    } catch (e) {
      const name = e instanceof Error ? e.name : '';
      if (name === 'TimeoutError' || name === 'AbortError') {
        throw new RcrtError({
          status: 0,
          code: 'timeout',
          message: `${route} did not complete within ${this.#timeoutMs ?? '?'} ms`,
          cause: e,
        });
      }
      throw new RcrtError({
        status: 0,
        code: 'network_error',
        message: `${route} failed: ${describeCause(e)}`,
        cause: e,
      });
    }
    const status = response.status;
    const requestId = response.headers.get('x-request-id') ?? undefined;
    if (status >= 200 && status < 300) return { status, text, requestId };

    let code: string | undefined;
    let message: string | undefined;
    try {
      const parsed: unknown = JSON.parse(text);
      if (isObject(parsed) && isObject(parsed.error)) {
        if (typeof parsed.error.code === 'string') code = parsed.error.code;
        if (typeof parsed.error.message === 'string') message = parsed.error.message;
      }
    } catch {
      // Not the service's error body; reported below without quoting it.
    }
    if (code === 'empty_value') {
      message = `${message ?? 'the value is empty'} (${EMPTY_VALUE_HINT})`;
    }
    throw new RcrtError({
      status,
      code: code ?? 'unexpected_response',
      message: message ?? `${route} failed with HTTP ${status} and no RCRT error body`,
      requestId,
    });
  }
}

/**
 * Parses a success answer as a JSON object; `expected`, if given, must hold for it. The body is
 * never quoted in an error: it may hold secret values or a minted token.
 */
function parseObject<T>(
  spec: RequestSpec,
  answer: { status: number; text: string; requestId: string | undefined },
  expected?: (body: Record<string, unknown>) => boolean,
): T {
  const { status, text, requestId } = answer;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // No cause: JSON.parse's message quotes the body around the error, and the body of a
    // decrypt or vault read holds secret values.
    parsed = undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) {
    throw new RcrtError({
      status,
      code: 'invalid_response',
      message: `${spec.method} response (HTTP ${status}) was not a JSON object`,
      requestId,
    });
  }
  if (expected && !(isObject(parsed) && expected(parsed))) {
    throw new RcrtError({
      status,
      code: 'invalid_response',
      message: `${spec.method} response (HTTP ${status}) lacked the expected fields`,
      requestId,
    });
  }
  return parsed as T;
}

/**
 * Creates a client for an RCRT Secrets service.
 *
 * @param options - `baseUrl` (required), `token` (a JWT or service token) when the service
 *   authenticates callers, an optional `fetch` implementation and an optional `timeoutMs`.
 * @returns The client.
 * @throws {@link RcrtError} `invalid_argument` for a missing or malformed `baseUrl`.
 *
 * @example
 * ```ts
 * const client = createClient({ baseUrl: 'http://127.0.0.1:8081', token: process.env.RCRT_TOKEN });
 * ```
 */
export function createClient(options: ClientOptions): RcrtClient {
  return new RcrtClient(options);
}
