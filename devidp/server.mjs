// Entry point of the dev identity provider: `node devidp/server.mjs`. The README lists the
// environment variables; stdout carries only the ready line that tests wait for.
import { AccountStore } from './lib/accounts.mjs';
import { ConfigError, readConfig } from './lib/config.mjs';
import { loadOrCreateSigningKeys, toPublicKeySet } from './lib/keys.mjs';
import { log } from './lib/log.mjs';
import { createProvider } from './lib/provider.mjs';
import { createAppRoutes } from './lib/routes.mjs';

async function start() {
  const config = readConfig();
  const accounts = await AccountStore.fromFile(config.accountsFile);
  const { keySet, created } = await loadOrCreateSigningKeys(config.keysFile);
  log('info', created ? 'signing key created' : 'signing key loaded', {
    file: config.keysFile,
    kids: keySet.keys.map((key) => key.kid),
  });

  const provider = createProvider({ config, accounts, keySet });
  provider.use(createAppRoutes({ provider, config, accounts, publicKeySet: toPublicKeySet(keySet) }));

  const server = provider.listen(config.port, config.host);
  // The handlers exist before the ready line is printed, because a caller may send the
  // signal as soon as it reads that line.
  const stop = (signal) => {
    log('info', 'stopping', { signal });
    server.close(() => process.exit(0));
    // Idle keep-alive connections would otherwise hold close() open.
    server.closeAllConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);

  await new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  process.stdout.write(`dev identity provider listening on ${config.issuer}\n`);
}

start().catch((error) => {
  const message = error instanceof ConfigError ? error.message : error.stack ?? String(error);
  log('error', 'start failed', { message });
  process.exit(1);
});
