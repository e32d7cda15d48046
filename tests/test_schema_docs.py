"""Every streaming endpoint is in the OpenAPI schema that /docs and /redoc show."""

import pytest

pytestmark = pytest.mark.django_db

STREAMS = {
    "/api/agents/{slug}/stream": "post",
    "/api/runs/{run_id}/stream": "get",
    "/chat/stream": "post",
    "/assistant/stream": "post",
    "/v1/chat/completions": "post",
    "/v1/responses": "post",
    "/v1/responses/{response_id}": "get",
    "/api/agents/{slug}/ui": "post",
    "/api/agents/{slug}/ui/{chat_id}/stream": "get",
    "/api/agents/{slug}/ag-ui": "post",
}


def test_streaming_endpoints_are_documented(client):
    schema = client.get("/api/schema/?format=json").json()
    for path, method in STREAMS.items():
        operation = schema["paths"][path][method]
        assert "text/event-stream" in operation["responses"]["200"]["content"], path
        assert operation["responses"]["200"]["description"], path
        if method == "post":
            assert operation["requestBody"]["content"]["application/json"]["schema"], path
    native = schema["paths"]["/api/agents/{slug}/stream"]["post"]["responses"]["200"]
    event = native["content"]["text/event-stream"]["schema"]
    kinds = {s["title"] for s in event["properties"]["data"]["contentSchema"]["oneOf"]}
    assert {"run_started", "raw_response", "run_item", "stream_complete", "error"} <= kinds
    assert "RunRequest" in schema["components"]["schemas"]
    for path in ("/v1/models", "/v1/responses/{response_id}/cancel", "/chat/session/{session_id}"):
        assert path in schema["paths"], path


def test_docs_pages_load_assets_from_this_server_only(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).content.decode()
        assert "http://" not in html.replace("http://testserver", "") and "https://" not in html, page
