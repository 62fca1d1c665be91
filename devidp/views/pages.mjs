// HTML pages of the dev identity provider. Every page is bilingual (Portuguese first, then
// English) because the provider has no locale negotiation; the portal itself is translated.

const HTML_ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (character) => HTML_ESCAPES[character]);
}

// The pages load nothing from other hosts, so they work offline and in tests that block
// every non-loopback connection.
const STYLE = `
  body { font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem; color: #1f2933; }
  h1 { font-size: 1.4rem; }
  .banner { background: #fff4e5; border: 1px solid #f0b86e; padding: .5rem .75rem; border-radius: 4px; }
  .error { background: #fde8e8; border: 1px solid #e57373; padding: .5rem .75rem; border-radius: 4px; }
  label { display: block; margin-top: .75rem; }
  input { width: 100%; padding: .4rem; box-sizing: border-box; }
  button { margin-top: 1rem; padding: .5rem 1.25rem; }
  table { border-collapse: collapse; margin-top: .5rem; }
  td, th { border: 1px solid #cbd2d9; padding: .25rem .5rem; text-align: left; }
`;

function renderLayout({ title, body }) {
  return `<!DOCTYPE html>
<html lang="pt-BR">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${escapeHtml(title)}</title>
  <style>${STYLE}</style>
</head>
<body>
${body}
</body>
</html>
`;
}

function renderAccountTable(accounts) {
  const rows = accounts
    .map(
      (account) => `      <tr><td>${escapeHtml(account.username)}</td><td>${escapeHtml(account.email)}</td>`
        + `<td><code>${escapeHtml(account.password)}</code></td>`
        + `<td>${escapeHtml((account.groups ?? []).join(', '))}</td></tr>`,
    )
    .join('\n');
  return `  <table>
    <thead><tr><th>Usuário / Username</th><th>E-mail</th><th>Senha / Password</th><th>Grupos / Groups</th></tr></thead>
    <tbody>
${rows}
    </tbody>
  </table>`;
}

/**
 * Renders the sign-in form. `errorMessage` is shown above the form; `login` refills the
 * username field after a failed attempt.
 */
export function renderLoginPage({ action, abortUrl, clientId, accounts, login = '', errorMessage }) {
  const error = errorMessage
    ? `  <p class="error" role="alert">${escapeHtml(errorMessage)}</p>\n`
    : '';
  return renderLayout({
    title: 'Entrar / Sign in',
    body: `  <p class="banner">Provedor de identidade de desenvolvimento: não use em produção.<br>
  Development identity provider: do not use in production.</p>
  <h1>Entrar / Sign in</h1>
  <p>Aplicação / Application: <code>${escapeHtml(clientId)}</code></p>
${error}  <form method="post" action="${escapeHtml(action)}" autocomplete="off">
    <label for="username">Usuário ou e-mail / Username or e-mail</label>
    <input id="username" name="username" required autofocus value="${escapeHtml(login)}">
    <label for="password">Senha / Password</label>
    <input id="password" name="password" type="password" required>
    <button type="submit">Entrar / Sign in</button>
  </form>
  <p><a href="${escapeHtml(abortUrl)}">Cancelar / Cancel</a></p>
  <h2>Contas de demonstração / Demo accounts</h2>
${renderAccountTable(accounts)}`,
  });
}

/** Renders an error page listing the OAuth error fields (`error`, `error_description`, ...). */
export function renderErrorPage(fields) {
  const items = Object.entries(fields)
    .map(([key, value]) => `    <li><strong>${escapeHtml(key)}</strong>: ${escapeHtml(value)}</li>`)
    .join('\n');
  return renderLayout({
    title: 'Erro / Error',
    body: `  <h1>Erro / Error</h1>
  <ul>
${items}
  </ul>`,
  });
}
