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
}

/** One page of secret metadata. */
export interface SecretPage {
  /** The secrets on this page, oldest first. */
  items: SecretMetadata[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  next_cursor: string | null;
}

/** A decrypted secret, as returned by {@link RcrtClient.getSecret}. */
export interface DecryptedSecret {
  /** The plaintext value. Handle with care: never log it. */
  value: string;
  /** The version that was decrypted (the current one). */
  version: number;
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
export type CreateSecretOptions = ValueOptions;

/** Options of {@link RcrtClient.setVaultSecret}. */
export type SetVaultSecretOptions = ValueOptions;

/** Options of {@link RcrtClient.updateSecret}. */
export interface UpdateSecretOptions extends ValueOptions {
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

/** Options of {@link RcrtClient.createSecretVault}. */
export interface CreateVaultOptions extends ValueOptions {
  /**
   * The vault's name: 1-64 letters, digits, `_`, `-` or `.`. Defaults to a generated
   * `vault-<random hex>`.
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
 * - `secrets.read`: list secrets, read metadata and vault metadata.
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

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

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
   * @param input - Name, value and scope.
   * @param options - `allowEmpty` to store an empty value.
   * @returns The new secret's metadata (version 1).
   * @throws {@link RcrtError} `name_taken` (409) if the name is used in that scope,
   *   `invalid_request` (400) for a bad name or scope, `empty_value` (400) for an empty value
   *   without `allowEmpty`, `value_too_large` (413), `forbidden` (403) without `secrets.write`
   *   on the scope.
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
    return this.#json<SecretMetadata>({
      method: 'POST',
      segments: ['secrets'],
      body: withAllowEmpty(body, options),
    });
  }

  /**
   * Lists secret metadata the caller may read, one page at a time (`GET /secrets`).
   *
   * @param query - Optional scope filter, page size and cursor.
   * @returns One page; follow `next_cursor` until it is `null` for the rest.
   * @throws {@link RcrtError} `invalid_request` (400) for a bad filter, limit or cursor.
   */
  async listSecrets(query: ListSecretsQuery = {}): Promise<SecretPage> {
    return this.#json<SecretPage>({
      method: 'GET',
      segments: ['secrets'],
      query: {
        scope_type: query.scope_type,
        scope_id: query.scope_id,
        limit: query.limit,
        cursor: query.cursor,
      },
    });
  }

  /**
   * Decrypts a secret's current version (`POST /secrets/{id}/decrypt`). The service records
   * the read, with `reason`, in its audit log before it returns the value.
   *
   * @param id - The secret's id.
   * @param reason - Why the value is read (required, recorded in the audit log).
   * @returns The value and its version.
   * @throws {@link RcrtError} `reason_required` (400) for an empty reason, `not_found` (404)
   *   for an unknown secret or one the caller may not decrypt.
   */
  async getSecret(id: string, reason: string): Promise<DecryptedSecret> {
    return this.#json<DecryptedSecret>({
      method: 'POST',
      segments: ['secrets', segment('secret id', id), 'decrypt'],
      body: { reason },
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
   *   `allowEmpty` to store an empty value.
   * @returns The updated metadata (its `version` is the new version).
   * @throws {@link RcrtError} `version_mismatch` (412) when `ifMatch` is stale, `not_found`
   *   (404), `empty_value` (400) for an empty value without `allowEmpty`, `value_too_large`
   *   (413).
   */
  async updateSecret(
    id: string,
    value: string,
    options: UpdateSecretOptions = {},
  ): Promise<SecretMetadata> {
    const headers: Record<string, string> = {};
    if (options.ifMatch !== undefined) {
      const tag = String(options.ifMatch).trim();
      if (!HEADER_SAFE.test(tag) || tag === '') {
        throw invalidArgument('ifMatch must be a version number such as 3 or "3"');
      }
      headers['if-match'] = tag.includes('"') ? tag : `"${tag}"`;
    }
    return this.#json<SecretMetadata>({
      method: 'PUT',
      segments: ['secrets', segment('secret id', id)],
      body: withAllowEmpty({ value }, options),
      headers,
    });
  }

  /**
   * Deletes a secret and every version of it (`DELETE /secrets/{id}`). The audit trail stays.
   *
   * @param id - The secret's id.
   * @throws {@link RcrtError} `not_found` (404).
   */
  async deleteSecret(id: string): Promise<void> {
    await this.#request({ method: 'DELETE', segments: ['secrets', segment('secret id', id)] });
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
   *   `allowEmpty` to store empty values (for any key of this call).
   * @returns The vault (id, name, workspace and keys; never the values).
   * @throws {@link RcrtError} `name_taken` (409) if the workspace has a vault of that name,
   *   `invalid_request` (400) for a bad name, key or workspace, `empty_value` (400) when a key
   *   has an empty value and `allowEmpty` is not set (nothing is created then).
   */
  async createSecretVault(
    workspace: string,
    secrets: Record<string, string>,
    options: CreateVaultOptions = {},
  ): Promise<Vault> {
    const name = options.name ?? `vault-${randomHex(8)}`;
    return this.#json<Vault>({
      method: 'POST',
      segments: ['secrets', 'vaults'],
      body: withAllowEmpty({ workspace, name, secrets: secrets ?? {} }, options),
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
   * @param options - `allowEmpty` to store an empty value.
   * @returns The vault with its keys after the change.
   * @throws {@link RcrtError} `not_found` (404), `invalid_request` (400) for a bad key,
   *   `empty_value` (400) for an empty value without `allowEmpty`, `ambiguous_vault` (409) for
   *   a name used in several workspaces.
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
    const { status, text, requestId } = await this.#request(spec);
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
