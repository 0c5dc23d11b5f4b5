// Starts Swagger UI on /docs over this server's /openapi.json (no inline script: the
// page's Content-Security-Policy allows scripts from this origin only).
"use strict";

window.addEventListener("DOMContentLoaded", function () {
  const root = document.getElementById("swagger-ui");
  root.replaceChildren();
  window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // The default sends the document to an outside validator and shows its badge.
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
