// oidc-provider configuration that makes its endpoints, tokens and claims look like an AWS
// Cognito user pool with one confidential app client.
import { randomBytes } from 'node:crypto';

import { Provider, errors } from 'oidc-provider';

import { profileClaims } from './accounts.mjs';
import { log } from './log.mjs';
import { renderErrorPage } from '../views/pages.mjs';

// Every access token is issued for this one resource server, because oidc-provider 9
// formats access tokens as JWTs only for a resource server (features.resourceIndicators).
export const ACCESS_TOKEN_RESOURCE = 'urn:vizier-med:devidp:cognito-user-pool';
export const SCOPES = ['openid', 'email', 'profile'];

export const ROUTES = {
  authorization: '/oauth2/authorize',
  token: '/oauth2/token',
  revocation: '/oauth2/revoke',
  jwks: '/.well-known/jwks.json',
  // Served by routes.mjs and not by oidc-provider; see handleUserInfo there.
  userinfo: '/oauth2/userInfo',
  logout: '/logout',
};

const DAY_SECONDS = 24 * 60 * 60;

function buildClient(client) {
  return {
    client_id: client.clientId,
    client_secret: client.clientSecret,
    redirect_uris: client.redirectUris,
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    // oidc-provider accepts client_secret_post as well for a client registered with
    // client_secret_basic, so both of Cognito's methods work.
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
    // Cognito always puts auth_time in ID tokens.
    require_auth_time: true,
  };
}

/**
 * Loads the client's grant, or creates one, and adds every requested scope to it. This is
 * the automatic consent: Cognito shows no consent screen to a user pool's own app clients.
 */
async function loadGrantWithRequestedScopes(ctx) {
  const { oidc } = ctx;
  const { Grant } = oidc.provider;
  const { accountId } = oidc.account;
  const { clientId } = oidc.client;

  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(clientId);
  let grant = grantId ? await Grant.find(grantId) : undefined;
  // A grant kept in the session for another account (after a sign-in as someone else)
  // cannot be reused, so a new one is created.
  if (!grant || grant.accountId !== accountId) {
    grant = new Grant({ accountId, clientId });
  }

  const scope = [...oidc.requestParamOIDCScopes].join(' ');
  if (scope) {
    grant.addOIDCScope(scope);
  }
  for (const [identifier, resourceServer] of Object.entries(oidc.resourceServers)) {
    const granted = [...oidc.requestParamScopes].filter((item) => resourceServer.scopes.has(item));
    if (granted.length) {
      grant.addResourceScope(identifier, granted.join(' '));
    }
  }
  await grant.save();
  return grant;
}

// The grant's authorization code or refresh token remembers when the user signed in.
function findAuthTime(ctx) {
  const entities = ctx?.oidc?.entities ?? {};
  return entities.AuthorizationCode?.authTime ?? entities.RefreshToken?.authTime;
}

function buildExtraAccessTokenClaims(accounts) {
  return async function extraTokenClaims(ctx, token) {
    if (token.kind !== 'AccessToken') {
      return undefined;
    }
    const account = accounts.findBySubject(token.accountId);
    return {
      token_use: 'access',
      auth_time: findAuthTime(ctx),
      username: account?.username,
      'cognito:groups': account?.groups ?? [],
    };
  };
}

/**
 * Hides `aud` from the signed access token. Cognito access tokens carry `client_id` and no
 * `aud`, but oidc-provider 9.13.3 throws when a JWT access token payload has no `aud`
 * (lib/models/formats/jwt.js). The property stays readable for that check and is made
 * non-enumerable, so the JSON.stringify call that builds the signed payload leaves it out.
 */
// NOTE: this relies on how oidc-provider 9.13.3 serializes the payload. The exact version
// pin and a test that asserts the access token has no aud catch an upgrade that changes it.
async function removeAudienceFromAccessToken(_ctx, _token, structuredToken) {
  Object.defineProperty(structuredToken.payload, 'aud', {
    value: structuredToken.payload.aud,
    enumerable: false,
    writable: true,
    configurable: true,
  });
}

async function renderError(ctx, out) {
  log('warn', 'request rejected', { path: ctx.path, error: out.error, description: out.error_description });
  ctx.type = 'html';
  ctx.body = renderErrorPage(out);
}

/** Builds the oidc-provider instance for one app client, the demo accounts and the keys. */
export function createProvider({ config, accounts, keySet }) {
  const ttlSeconds = config.accessTokenTtlSeconds;

  const configuration = {
    clients: [buildClient(config.client)],
    jwks: keySet,
    // The session and interaction cookies are signed with a secret made at each start.
    // Sessions live in oidc-provider's in-memory adapter and end with the process anyway.
    cookies: { keys: [randomBytes(32).toString('base64url')] },

    async findAccount(_ctx, sub) {
      const account = accounts.findBySubject(sub);
      if (!account) {
        return undefined;
      }
      return {
        accountId: account.sub,
        async claims(use) {
          const claims = profileClaims(account);
          return use === 'id_token' ? { ...claims, token_use: 'id' } : claims;
        },
      };
    },
    // Cognito sends its own claims and token_use in every ID token, whatever the scope, so
    // they belong to the openid scope here.
    claims: {
      openid: ['sub', 'cognito:username', 'cognito:groups', 'token_use'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    scopes: SCOPES,
    responseTypes: ['code'],
    // Cognito puts every granted scope claim in the ID token; the conforming behaviour would
    // leave them for the userinfo endpoint only.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    extraTokenClaims: buildExtraAccessTokenClaims(accounts),
    formats: { customizers: { jwt: removeAudienceFromAccessToken } },
    loadExistingGrant: loadGrantWithRequestedScopes,
    // Cognito issues a refresh token with every authorization code exchange.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),

    // The two client authentication methods that Cognito app clients with a secret accept.
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],

    features: {
      devInteractions: { enabled: false },
      // Off because Cognito offers neither, so the portal never comes to depend on them.
      pushedAuthorizationRequests: { enabled: false },
      dPoP: { enabled: false },
      revocation: { enabled: true },
      // userInfo is served by routes.mjs. oidc-provider's own endpoint rejects access tokens
      // that have an audience, and every JWT access token has one.
      userinfo: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => ACCESS_TOKEN_RESOURCE,
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (resourceIndicator !== ACCESS_TOKEN_RESOURCE) {
            throw new errors.InvalidTarget(`unknown resource indicator; use ${ACCESS_TOKEN_RESOURCE}`);
          }
          return {
            scope: SCOPES.join(' '),
            accessTokenFormat: 'jwt',
            accessTokenTTL: ttlSeconds,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    routes: {
      authorization: ROUTES.authorization,
      token: ROUTES.token,
      revocation: ROUTES.revocation,
      jwks: ROUTES.jwks,
    },
    discovery: {
      userinfo_endpoint: `${config.issuer}${ROUTES.userinfo}`,
    },
    // Only the portal's server talks to the token endpoint, so no browser origin is allowed.
    clientBasedCORS: () => false,
    interactions: {
      url: async (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    renderError,
    ttl: {
      AccessToken: ttlSeconds,
      IdToken: ttlSeconds,
      AuthorizationCode: 5 * 60,
      Interaction: 60 * 60,
      Session: DAY_SECONDS,
      Grant: 30 * DAY_SECONDS,
      RefreshToken: 30 * DAY_SECONDS,
    },
  };

  const provider = new Provider(config.issuer, configuration);
  provider.on('server_error', (_ctx, error) => {
    log('error', 'server error', { message: error.message });
  });
  return provider;
}
