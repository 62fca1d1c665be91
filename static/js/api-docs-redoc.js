// Start ReDoc on the portal's OpenAPI document. ReDoc 3's bundle is an ES module, so this
// file is one too. The page gives the document URL in a data attribute, because the
// Content Security Policy allows no inline script.
import { init } from "../vendor/redoc/redoc.standalone.js";

const root = document.getElementById("api-docs");
// Telemetry would post usage to Redocly's servers.
init(root.dataset.documentUrl, { disableTelemetry: true }, root);
