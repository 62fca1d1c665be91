// Demo accounts read from the JSON file that the portal also uses to create its users.
import { createHash, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs/promises';

const REQUIRED_FIELDS = ['sub', 'username', 'email', 'name', 'password'];

function validateAccount(account, index, file) {
  for (const field of REQUIRED_FIELDS) {
    if (typeof account?.[field] !== 'string' || account[field] === '') {
      throw new Error(`accounts file ${file}: account #${index} is missing the string field "${field}"`);
    }
  }
  if (account.groups !== undefined && !Array.isArray(account.groups)) {
    throw new Error(`accounts file ${file}: account #${index} has "groups" that is not a list`);
  }
}

export class AccountStore {
  #accounts;

  constructor(accounts) {
    this.#accounts = accounts;
  }

  /** Reads and validates the accounts file. Throws when it is missing, unreadable or invalid. */
  static async fromFile(file) {
    let document;
    try {
      document = JSON.parse(await fs.readFile(file, 'utf8'));
    } catch (error) {
      throw new Error(
        `failed to read accounts file ${file}: ${error.message}; check DEVIDP_ACCOUNTS_FILE`,
      );
    }
    const accounts = document?.accounts;
    if (!Array.isArray(accounts) || accounts.length === 0) {
      throw new Error(`accounts file ${file} has no "accounts" list`);
    }
    accounts.forEach((account, index) => validateAccount(account, index, file));

    const subjects = new Set(accounts.map((account) => account.sub));
    if (subjects.size !== accounts.length) {
      throw new Error(`accounts file ${file} repeats a "sub" value`);
    }
    return new AccountStore(accounts);
  }

  list() {
    return [...this.#accounts];
  }

  findBySubject(sub) {
    return this.#accounts.find((account) => account.sub === sub);
  }

  /** Finds an account by username (exact) or e-mail (case-insensitive), as Cognito's sign-in does. */
  findByLogin(login) {
    const username = login.trim();
    const email = username.toLowerCase();
    return this.#accounts.find(
      (account) => account.username === username || account.email.toLowerCase() === email,
    );
  }
}

/**
 * Builds the user claims that Cognito puts in ID tokens and returns from userInfo.
 * `email_verified` is a JSON boolean, as in Cognito ID tokens.
 */
export function profileClaims(account) {
  return {
    sub: account.sub,
    email: account.email,
    email_verified: true,
    name: account.name,
    'cognito:username': account.username,
    'cognito:groups': account.groups ?? [],
  };
}

/** Compares a submitted password with the account's in constant time. */
export function passwordMatches(account, password) {
  const expected = createHash('sha256').update(account.password).digest();
  const actual = createHash('sha256').update(password).digest();
  return timingSafeEqual(expected, actual);
}
