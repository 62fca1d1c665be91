// Routes that oidc-provider leaves to the application: the sign-in pages, Cognito's
// /logout and Cognito's /oauth2/userInfo.
import { createLocalJWKSet, jwtVerify } from 'jose';
import { errors } from 'oidc-provider';

import { passwordMatches, profileClaims } from './accounts.mjs';
import { log } from './log.mjs';
import { ROUTES } from './provider.mjs';
import { renderErrorPage, renderLoginPage } from '../views/pages.mjs';

const MAX_FORM_BYTES = 16 * 1024;
const INTERACTION_PATH = /^\/interaction\/([\w-]+)(\/login|\/abort)?$/;
// Same attributes as oidc-provider's default session cookie, so that clearing it matches.
const SESSION_COOKIE_OPTIONS = { httpOnly: true, sameSite: 'lax' };

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function readFormBody(ctx) {
  if (!ctx.is('application/x-www-form-urlencoded')) {
    throw new HttpError(415, 'the form must be sent as application/x-www-form-urlencoded');
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) {
      throw new HttpError(413, `the form is larger than ${MAX_FORM_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function renderHtmlError(ctx, status, fields) {
  ctx.status = status;
  ctx.type = 'html';
  ctx.body = renderErrorPage(fields);
}

// --- sign-in interaction -------------------------------------------------------------------

async function loadInteraction(provider, ctx, uid) {
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (error) {
    if (error instanceof errors.SessionNotFound) {
      throw new HttpError(
        400,
        'the sign-in request expired or its cookie is missing; start again from the application',
      );
    }
    throw error;
  }
  if (details.uid !== uid) {
    throw new HttpError(
      400,
      'the sign-in request does not match this browser; start again from the application',
    );
  }
  return details;
}

function renderLogin(ctx, { details, accounts, login, errorMessage }) {
  ctx.status = 200;
  ctx.type = 'html';
  ctx.body = renderLoginPage({
    action: `/interaction/${details.uid}/login`,
    abortUrl: `/interaction/${details.uid}/abort`,
    clientId: details.params.client_id,
    accounts: accounts.list(),
    login,
    errorMessage,
  });
}

async function finishInteraction(provider, ctx, result) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: false,
  });
  ctx.redirect(returnTo);
  ctx.status = 303;
}

async function showInteraction(provider, accounts, ctx, uid) {
  const details = await loadInteraction(provider, ctx, uid);
  // Consent is granted automatically in provider.mjs, so sign-in is the only prompt left.
  if (details.prompt.name !== 'login') {
    log('error', 'unsupported interaction prompt', {
      prompt: details.prompt.name,
      reasons: details.prompt.reasons,
    });
    throw new HttpError(500, `unsupported interaction prompt "${details.prompt.name}"`);
  }
  renderLogin(ctx, { details, accounts });
}

async function submitLogin(provider, accounts, ctx, uid) {
  const details = await loadInteraction(provider, ctx, uid);
  const form = await readFormBody(ctx);
  const login = form.get('username') ?? '';
  const password = form.get('password') ?? '';

  const account = login.trim() ? accounts.findByLogin(login) : undefined;
  if (!account || !passwordMatches(account, password)) {
    log('info', 'sign-in failed', { username: login });
    renderLogin(ctx, {
      details,
      accounts,
      login,
      errorMessage: 'Usuário ou senha incorretos. / Incorrect username or password.',
    });
    return;
  }

  log('info', 'sign-in succeeded', { sub: account.sub });
  await finishInteraction(provider, ctx, { login: { accountId: account.sub } });
}

async function abortInteraction(provider, ctx, uid) {
  await loadInteraction(provider, ctx, uid);
  await finishInteraction(provider, ctx, {
    error: 'access_denied',
    error_description: 'the user cancelled the sign-in',
  });
}

// --- Cognito /logout -------------------------------------------------------------------------

async function handleLogout(provider, config, ctx) {
  const clientId = ctx.query.client_id;
  const logoutUri = ctx.query.logout_uri;

  if (typeof clientId !== 'string' || !(await provider.Client.find(clientId))) {
    throw new HttpError(400, 'client_id is missing or not a registered client');
  }
  // Cognito compares the logout URL exactly with the app client's sign-out URLs.
  if (typeof logoutUri !== 'string' || !config.client.logoutUris.includes(logoutUri)) {
    throw new HttpError(
      400,
      'logout_uri is missing or not one of the sign-out URLs registered for this client',
    );
  }

  const session = await provider.Session.get(ctx);
  if (session.accountId) {
    await session.destroy();
    log('info', 'session ended', { sub: session.accountId });
  }
  ctx.cookies.set(provider.cookieName('session'), null, SESSION_COOKIE_OPTIONS);
  ctx.redirect(logoutUri);
}

// --- Cognito /oauth2/userInfo ----------------------------------------------------------------

function rejectBearer(ctx, status, error, description) {
  log('warn', 'userInfo request rejected', { status, error, description });
  ctx.status = status;
  ctx.set('WWW-Authenticate', `Bearer error="${error}", error_description="${description}"`);
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error, error_description: description };
}

function readBearerToken(ctx) {
  const match = /^Bearer\s+(\S+)$/i.exec(ctx.get('Authorization'));
  return match?.[1];
}

/**
 * Returns the user's claims for a valid access token, like Cognito's userInfo endpoint.
 * The token is checked by signature, issuer, expiry and token_use, as a resource server
 * would; oidc-provider stores no state for JWT access tokens.
 */
// NOTE: revoking the refresh token does not invalidate access tokens already issued from it
// here, although Cognito's revocation does; they stay valid until they expire.
async function handleUserInfo(provider, accounts, keys, config, ctx) {
  const token = readBearerToken(ctx);
  if (!token) {
    rejectBearer(ctx, 401, 'invalid_request', 'missing Bearer access token in the Authorization header');
    return;
  }

  let payload;
  try {
    ({ payload } = await jwtVerify(token, keys, { issuer: config.issuer, algorithms: ['RS256'] }));
  } catch (error) {
    rejectBearer(ctx, 401, 'invalid_token', `access token is invalid: ${error.code ?? error.message}`);
    return;
  }
  if (payload.token_use !== 'access' || !(await provider.Client.find(String(payload.client_id)))) {
    rejectBearer(ctx, 401, 'invalid_token', 'token is not an access token of a registered client');
    return;
  }

  const scopes = new Set(String(payload.scope ?? '').split(' '));
  if (!scopes.has('openid')) {
    rejectBearer(ctx, 403, 'insufficient_scope', 'access token lacks the openid scope');
    return;
  }
  const account = accounts.findBySubject(payload.sub);
  if (!account) {
    rejectBearer(ctx, 401, 'invalid_token', 'the token subject is no longer an account');
    return;
  }

  const claims = { ...profileClaims(account), username: account.username };
  if (!scopes.has('email')) {
    delete claims.email;
    delete claims.email_verified;
  }
  if (!scopes.has('profile')) {
    delete claims.name;
  }
  ctx.set('Cache-Control', 'no-store');
  ctx.body = claims;
}

// --- dispatch --------------------------------------------------------------------------------

/** Builds the Koa middleware that serves the routes oidc-provider does not handle. */
export function createAppRoutes({ provider, config, accounts, publicKeySet }) {
  const keys = createLocalJWKSet(publicKeySet);

  // Returns the handler for the request, or undefined when oidc-provider's 404 should stand.
  function matchRoute(ctx) {
    const interaction = INTERACTION_PATH.exec(ctx.path);
    if (interaction) {
      const [, uid, action] = interaction;
      if (!action && ctx.method === 'GET') {
        return () => showInteraction(provider, accounts, ctx, uid);
      }
      if (action === '/login' && ctx.method === 'POST') {
        return () => submitLogin(provider, accounts, ctx, uid);
      }
      if (action === '/abort' && ctx.method === 'GET') {
        return () => abortInteraction(provider, ctx, uid);
      }
      return () => {
        throw new HttpError(405, `${ctx.method} is not allowed on ${ctx.path}`);
      };
    }
    if (ctx.path === ROUTES.userinfo && ['GET', 'POST'].includes(ctx.method)) {
      return () => handleUserInfo(provider, accounts, keys, config, ctx);
    }
    if (ctx.path === ROUTES.logout && ctx.method === 'GET') {
      return () => handleLogout(provider, config, ctx);
    }
    return undefined;
  }

  return async function appRoutes(ctx, next) {
    const handler = matchRoute(ctx);
    if (!handler) {
      await next();
      return;
    }
    try {
      await handler();
    } catch (error) {
      if (error instanceof HttpError) {
        log('warn', 'request rejected', { path: ctx.path, status: error.status, message: error.message });
        renderHtmlError(ctx, error.status, { error: error.message });
        return;
      }
      log('error', 'request failed', { path: ctx.path, message: error.message });
      renderHtmlError(ctx, 500, { error: 'internal error; see the provider log' });
    }
  };
}
