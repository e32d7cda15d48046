// Starts ReDoc on the API docs page (templates/drf_spectacular/redoc.html): the site's CSP runs no inline script.
const container = document.getElementById("redoc-container");
Redoc.init(container.dataset.schemaUrl, JSON.parse(container.dataset.settings), container);
