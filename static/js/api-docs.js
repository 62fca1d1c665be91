// Start Swagger UI or ReDoc on the portal's OpenAPI document. The page names the viewer
// and the document URL in data attributes, because the Content Security Policy allows
// no inline script.
(function () {
  "use strict";
  var root = document.getElementById("api-docs");
  var documentUrl = root.dataset.documentUrl;
  if (root.dataset.viewer === "swagger") {
    window.SwaggerUIBundle({
      url: documentUrl,
      domNode: root,
      deepLinking: true,
      // The validator badge would send the document to an outside service.
      validatorUrl: null,
    });
  } else {
    window.Redoc.init(documentUrl, { disableSearch: false, hideDownloadButton: false }, root);
  }
})();
