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


def test_the_schema_states_what_the_views_answer(client):
    """Each was a schemathesis conformance failure: the lists' real shapes, the statuses and
    limits the server keeps."""
    schema = client.get("/api/schema/?format=json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]

    def results(path: str) -> dict:
        page = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        page = components[page["$ref"].rsplit("/", 1)[1]] if "$ref" in page else page
        return page["properties"]["results"]["items"]

    assert results("/api/conversations/{id}/items/")["$ref"].endswith("/ConversationItem")
    assert results("/api/runs/{id}/events/")["$ref"].endswith("/RunEvent")
    assert "html" in results("/api/conversations/{id}/turns/")["properties"]
    assert (
        "steps"
        in paths["/api/runs/{id}/turn/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
            "properties"
        ]
    )
    assert "409" in paths["/api/runs/{id}/cancel"]["post"]["responses"]
    offset = next(p for p in paths["/api/runs/"]["get"]["parameters"] if p["name"] == "offset")
    assert offset["schema"]["minimum"] == 0 and offset["schema"]["maximum"] == 1_000_000_000
    text = components["RunRequest"]["properties"]["input"]["oneOf"][0]
    assert text["minLength"] == 1 and text["pattern"] and text["maxLength"] == 32_000
    assert components["ConversationCreate"]["additionalProperties"] is False
