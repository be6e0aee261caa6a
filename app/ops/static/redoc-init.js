// Starts ReDoc on /redoc. A file of its own rather than an inline script, so that the page's
// Content-Security-Policy allows scripts from the service only; the page's nonce lets through
// the <style> elements ReDoc adds as it renders.
"use strict";
(function () {
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, { nonce: root.dataset.styleNonce }, root);
})();
