// Settings of the dev identity provider, read once from the environment at start-up.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const DEVIDP_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

export class ConfigError extends Error {}

function readString(env, name, fallback) {
  const value = env[name]?.trim();
  if (value) {
    return value;
  }
  if (fallback === undefined) {
    throw new ConfigError(`${name} is missing; set it in the environment`);
  }
  return fallback;
}

function readPositiveInteger(env, name, fallback) {
  const text = readString(env, name, String(fallback));
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new ConfigError(`${name} is invalid: expected a positive integer, got "${text}"`);
  }
  return value;
}

// A path from the environment is taken relative to the working directory, like any other
// command-line path. The default is relative to the devidp folder.
function readPath(env, name, defaultRelativeToDevidp) {
  const value = env[name]?.trim();
  return value ? path.resolve(value) : path.resolve(DEVIDP_DIR, defaultRelativeToDevidp);
}

function readUrlList(env, name) {
  const items = readString(env, name)
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
  if (items.length === 0) {
    throw new ConfigError(`${name} is empty; give one or more comma-separated URLs`);
  }
  for (const item of items) {
    if (!URL.canParse(item)) {
      throw new ConfigError(`${name} contains an invalid URL: "${item}"`);
    }
  }
  return items;
}

/**
 * Builds the settings from environment variables. Throws ConfigError naming the variable
 * when a value is missing or invalid.
 */
export function readConfig(env = process.env) {
  const host = readString(env, 'DEVIDP_HOST', '127.0.0.1');
  const port = readPositiveInteger(env, 'DEVIDP_PORT', 9010);
  if (port > 65535) {
    throw new ConfigError(`DEVIDP_PORT is invalid: ${port} is above 65535`);
  }

  const issuer = readString(env, 'DEVIDP_ISSUER', `http://${host}:${port}`).replace(/\/+$/, '');
  if (!URL.canParse(issuer)) {
    throw new ConfigError(`DEVIDP_ISSUER is not a valid URL: "${issuer}"`);
  }

  return {
    host,
    port,
    issuer,
    client: {
      clientId: readString(env, 'DEVIDP_CLIENT_ID'),
      clientSecret: readString(env, 'DEVIDP_CLIENT_SECRET'),
      redirectUris: readUrlList(env, 'DEVIDP_REDIRECT_URIS'),
      logoutUris: readUrlList(env, 'DEVIDP_LOGOUT_URIS'),
    },
    accountsFile: readPath(env, 'DEVIDP_ACCOUNTS_FILE', '../portal/data/demo_accounts.json'),
    keysFile: readPath(env, 'DEVIDP_KEYS_FILE', '.keys.json'),
    accessTokenTtlSeconds: readPositiveInteger(env, 'DEVIDP_ACCESS_TOKEN_TTL', 3600),
  };
}
