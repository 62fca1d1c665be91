// Log lines go to stderr so that stdout carries only the ready line that tests wait for.

export function log(level, message, fields = {}) {
  const details = Object.entries(fields)
    .map(([key, value]) => `${key}=${JSON.stringify(value)}`)
    .join(' ');
  const suffix = details ? ` ${details}` : '';
  process.stderr.write(`${new Date().toISOString()} ${level} devidp: ${message}${suffix}\n`);
}
