// Start Swagger UI on the portal's OpenAPI document. The page gives the document URL in
// a data attribute, because the Content Security Policy allows no inline script.
(function () {
  "use strict";
  var root = document.getElementById("api-docs");
  window.SwaggerUIBundle({
    url: root.dataset.documentUrl,
    domNode: root,
    deepLinking: true,
    // The validator badge would send the document to an outside service.
    validatorUrl: null,
  });
})();
