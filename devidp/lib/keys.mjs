// The RS256 signing key set, kept in a file so tokens stay verifiable across restarts.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';

async function generateSigningKey() {
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = await exportJWK(privateKey);
  jwk.kid = await calculateJwkThumbprint(jwk);
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  return jwk;
}

function assertKeySet(keySet, file) {
  const keys = keySet?.keys;
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new Error(`key file ${file} is invalid: expected {"keys": [...]} with at least one key`);
  }
  for (const key of keys) {
    if (key.kty !== 'RSA' || typeof key.d !== 'string' || typeof key.kid !== 'string') {
      throw new Error(`key file ${file} is invalid: every key must be a private RSA JWK with a kid`);
    }
  }
}

/**
 * Loads the private JWK set from `file`, or generates one RS256 key and writes it there
 * (mode 0600) when the file does not exist yet. Returns `{ keySet, created }`.
 */
export async function loadOrCreateSigningKeys(file) {
  let text;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if (error.code !== 'ENOENT') {
      throw error;
    }
  }

  if (text !== undefined) {
    let keySet;
    try {
      keySet = JSON.parse(text);
    } catch (error) {
      throw new Error(`key file ${file} is not valid JSON: ${error.message}; delete it to get a new key`);
    }
    assertKeySet(keySet, file);
    return { keySet, created: false };
  }

  const keySet = { keys: [await generateSigningKey()] };
  await fs.mkdir(path.dirname(file), { recursive: true });
  // The exclusive flag makes a second process that starts at the same moment fail with
  // EEXIST instead of overwriting the key that the first one already serves.
  await fs.writeFile(file, `${JSON.stringify(keySet, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return { keySet, created: true };
}

/** Returns the public half of a private JWK set, as served at the jwks_uri. */
export function toPublicKeySet(keySet) {
  return {
    keys: keySet.keys.map(({ kty, n, e, kid, alg, use }) => ({ kty, n, e, kid, alg, use })),
  };
}
