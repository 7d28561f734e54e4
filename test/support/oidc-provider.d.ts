// oidc-provider (9) ships no types and there is no @types package for it: this declares the part of
// its API that test/support/oidc.ts uses (the provider is a test dependency only), so that file
// compiles under strict mode without `any`. Names follow node_modules/oidc-provider/lib.
declare module 'oidc-provider' {
  import type { EventEmitter } from 'node:events';
  import type { IncomingMessage, ServerResponse } from 'node:http';

  /** What an adapter stores for one model instance (a token, a client, a session). */
  export type AdapterPayload = Record<string, unknown>;

  /** The storage contract; one adapter is made per model name ('Client', 'ClientCredentials', ...). */
  export interface Adapter {
    /** `expiresIn` in seconds. */
    upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void>;
    find(id: string): Promise<AdapterPayload | undefined>;
    findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
    findByUid(uid: string): Promise<AdapterPayload | undefined>;
    consume(id: string): Promise<void>;
    destroy(id: string): Promise<void>;
    revokeByGrantId(grantId: string): Promise<void>;
  }

  /** Registered client metadata (RFC 7591 names). */
  export interface ClientMetadata {
    client_id: string;
    client_secret?: string;
    grant_types?: string[];
    response_types?: string[];
    redirect_uris?: string[];
    token_endpoint_auth_method?: string;
    scope?: string;
  }

  /** The client as the provider's callbacks see it. */
  export interface Client {
    readonly clientId: string;
    readonly scope?: string;
  }

  /** An access token being issued (an AccessToken or a ClientCredentials model). */
  export interface IssuedToken {
    readonly kind: string;
    readonly clientId: string;
    readonly scope?: string;
  }

  /** What `features.resourceIndicators.getResourceServerInfo` returns; TTL in seconds. */
  export interface ResourceServerInfo {
    scope: string;
    audience?: string;
    accessTokenTTL?: number;
    accessTokenFormat?: 'opaque' | 'jwt';
    jwt?: { sign?: { alg: string; kid?: string } };
  }

  /** The koa context the callbacks get; opaque here. */
  export type KoaContextWithOIDC = object;

  export interface Configuration {
    adapter?: (name: string) => Adapter;
    clients?: ClientMetadata[];
    jwks?: { keys: Record<string, unknown>[] };
    scopes?: string[];
    cookies?: { keys: string[] };
    routes?: Record<string, string>;
    /** Values in seconds, or a function of the token returning seconds. */
    ttl?: Record<string, number>;
    clientBasedCORS?: (ctx: KoaContextWithOIDC, origin: string, client: Client) => boolean;
    findAccount?: (ctx: KoaContextWithOIDC, sub: string) => Promise<undefined>;
    extraTokenClaims?: (
      ctx: KoaContextWithOIDC,
      token: IssuedToken,
    ) => Promise<Record<string, unknown> | undefined>;
    features?: {
      devInteractions?: { enabled: boolean };
      clientCredentials?: { enabled: boolean };
      introspection?: { enabled: boolean };
      revocation?: { enabled: boolean };
      resourceIndicators?: {
        enabled: boolean;
        defaultResource?: (
          ctx: KoaContextWithOIDC,
          client: Client,
          oneOf?: string[],
        ) => Promise<string | string[] | undefined>;
        useGrantedResource?: (ctx: KoaContextWithOIDC, model: object) => Promise<boolean>;
        getResourceServerInfo?: (
          ctx: KoaContextWithOIDC,
          resourceIndicator: string,
          client: Client,
        ) => Promise<ResourceServerInfo>;
      };
    };
  }

  export default class Provider extends EventEmitter {
    constructor(issuer: string, configuration?: Configuration);
    readonly issuer: string;
    proxy: boolean;
    /** The koa app's request listener; it settles the promise itself (errors become responses). */
    callback(): (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  }

  export const errors: {
    InvalidTarget: new (description?: string, detail?: string) => Error;
  };
}
