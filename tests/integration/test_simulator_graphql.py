"""The simulator speaks GraphQL as any client expects: the documentation's own examples, and the language.

The documents in the first tests are copied verbatim from Doitong's documentation
(the curl, JavaScript `fetch`, Python `requests` and GraphQL examples), line breaks
and all. The simulator runs behind a real uvicorn; requests go over HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
import pytest

from receiver.simulator import Account, pricing
from receiver.simulator.jobs import Job
from tests.integration.test_simulator import KEY, TEXT, Sim, generate_input, simulated

AUTH = {"Authorization": f"Bearer {KEY}"}
GENERATED = {"id", "status", "type", "provider", "url", "metadata", "creditCost", "createdAt"}

# --- the documentation's examples, verbatim -----------------------------------------------------

# curl -X POST https://api.doitong.com/graphql -H "Content-Type: application/json" -H "Authorization: …" -d '…'
CURL_BODY = """{
"query": "mutation Generate($input: GenerateInput!) { generate(input: $input) { id status type provider url metadata creditCost } }",
"variables": {
"input": {
"type": "AVATAR",
"provider": "hedra",
"input": {
"text": "Hello, welcome to our platform!",
"avatarId": "professional-1"
},
"options": {
"voice": "en-US-neural"
}
}
}
}"""  # noqa: E501

# fetch('https://api.doitong.com/graphql', {…, body: JSON.stringify({query: `…`, variables: {…}})})
JAVASCRIPT_QUERY = """
mutation GenerateAvatar($input: AvatarGenerationInput!) {
generateAvatar(input: $input) {
id
status
videoUrl
}
}
"""
JAVASCRIPT_VARIABLES = {
    "input": {
        "service": "hedra",
        "text": "Hello, welcome to our platform!",
        "avatarId": "professional-1",
        "voice": "en-US-neural",
    }
}

# requests.post(url, json={"query": query, "variables": variables}, headers=headers)
PYTHON_QUERY = """
mutation Generate($input: GenerateInput!) {
generate(input: $input) {
id
status
type
provider
url
metadata
creditCost
}
}
"""
PYTHON_VARIABLES = {
    "input": {
        "type": "AVATAR",
        "provider": "hedra",
        "input": {"text": "Hello, welcome to our platform!", "avatarId": "professional-1"},
        "options": {"voice": "en-US-neural"},
    }
}

# The GraphQL example with its "# Variables".
GRAPHQL_QUERY = """mutation Generate($input: GenerateInput!) {
generate(input: $input) {
id
status
type
provider
url
metadata
creditCost
createdAt
}
}"""
GRAPHQL_VARIABLES = {
    "input": {
        "type": "AVATAR",
        "provider": "hedra",
        "input": {"text": "Hello, welcome to our platform!", "avatarId": "professional-1"},
        "options": {"voice": "en-US-neural", "language": "en", "version": "hedra-1.0"},
    }
}


def _data(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    assert "errors" not in document, document
    data: dict[str, Any] = document["data"]
    return data


async def _post(sim: Sim, document: dict[str, Any]) -> httpx.Response:
    return await sim.client.post("/graphql", json=document, headers=AUTH)


async def test_the_curl_example_is_answered_with_the_fields_it_selects() -> None:
    async with simulated() as sim:
        answer = await sim.client.post(
            "/graphql", content=CURL_BODY.encode(), headers={"Content-Type": "application/json", **AUTH}
        )
        job = _data(answer)["generate"]
        assert list(job) == ["id", "status", "type", "provider", "url", "metadata", "creditCost"]
        assert (job["status"], job["type"], job["provider"], job["url"]) == ("processing", "AVATAR", "hedra", None)
        assert job["creditCost"] == pricing.cost("Hello, welcome to our platform!")
        assert job["metadata"]["voice"] == "en-US-neural"


async def test_the_javascript_fetch_example_is_answered() -> None:
    async with simulated() as sim:
        answer = await _post(sim, {"query": JAVASCRIPT_QUERY, "variables": JAVASCRIPT_VARIABLES})
        result = _data(answer)["generateAvatar"]
        assert list(result) == ["id", "status", "videoUrl"]
        assert (result["status"], result["videoUrl"]) == ("processing", None)
        assert sim.simulator.job(result["id"]) is not None


async def test_the_python_requests_example_is_answered() -> None:
    async with simulated() as sim:
        answer = await _post(sim, {"query": PYTHON_QUERY, "variables": PYTHON_VARIABLES})
        job = _data(answer)["generate"]
        assert set(job) == GENERATED - {"createdAt"}
        assert job["status"] == "processing"


async def test_the_graphql_example_with_its_variables_is_answered() -> None:
    async with simulated() as sim:
        job = _data(await _post(sim, {"query": GRAPHQL_QUERY, "variables": GRAPHQL_VARIABLES}))["generate"]
        assert set(job) == GENERATED
        created = sim.simulator.job(job["id"])
        assert created is not None
        assert (created.input.language, created.input.version) == ("en", "hedra-1.0")


# --- the language -------------------------------------------------------------------------------


async def test_a_selection_set_is_answered_with_only_the_selected_fields() -> None:
    async with simulated() as sim:
        query = "mutation Generate($input: GenerateInput!) { generate(input: $input) { id } }"
        job = _data(await sim.graphql(query, {"input": generate_input()}))["generate"]
        assert list(job) == ["id"]
        polled = _data(await sim.graphql("query($id: ID!) { avatar(id: $id) { status } }", {"id": job["id"]}))
        assert polled == {"avatar": {"status": "processing"}}


async def test_an_alias_answers_under_the_alias() -> None:
    async with simulated() as sim:
        query = "mutation($input: GenerateInput!) { r: generate(input: $input) { jobId: id cost: creditCost } }"
        data = _data(await sim.graphql(query, {"input": generate_input()}))
        assert list(data) == ["r"]
        assert list(data["r"]) == ["jobId", "cost"]
        job_id = data["r"]["jobId"]
        both = _data(
            await sim.graphql(
                "query($id: ID!) { first: avatar(id: $id) { id } again: avatar(id: $id) { status } }", {"id": job_id}
            )
        )
        assert both == {"first": {"id": job_id}, "again": {"status": "processing"}}


async def test_a_space_before_the_arguments_and_an_inline_input_literal_work() -> None:
    async with simulated() as sim:
        spaced = "mutation Generate($input: GenerateInput!) { generate (input: $input) { id } }"
        assert "id" in _data(await sim.graphql(spaced, {"input": generate_input()}))["generate"]
        inline = """
            mutation {
              generate(input: {
                type: "AVATAR", provider: "hedra",
                input: {text: "Hello, welcome to our platform!", avatarId: "professional-1"},
                options: {voice: "en-US-neural", version: "hedra-1.0"}
              }) { id creditCost }
            }
        """
        job = _data(await sim.graphql(inline, {}))["generate"]
        assert job["creditCost"] == pricing.cost(TEXT)
        polled = _data(await sim.graphql(f'{{ avatar(id: "{job["id"]}") {{ id }} }}', {}))
        assert polled == {"avatar": {"id": job["id"]}}


async def test_fragments_named_and_inline_work() -> None:
    async with simulated() as sim:
        query = """
            mutation Generate($input: GenerateInput!) {
              generate(input: $input) { ...Basics ... on Generation { creditCost } __typename }
            }
            fragment Basics on Generation { id status }
        """
        job = _data(await sim.graphql(query, {"input": generate_input()}))["generate"]
        assert list(job) == ["id", "status", "creditCost", "__typename"]
        assert job["__typename"] == "Generation"


async def test_the_operation_name_picks_the_operation() -> None:
    async with simulated() as sim:
        job_id = _data(await sim.generate())["generate"]["id"]
        document = "query A($id: ID!) { avatar(id: $id) { id } } query B($id: ID!) { avatar(id: $id) { status } }"
        picked = await _post(sim, {"query": document, "variables": {"id": job_id}, "operationName": "B"})
        assert _data(picked) == {"avatar": {"status": "processing"}}
        ambiguous = await _post(sim, {"query": document, "variables": {"id": job_id}})
        assert ambiguous.status_code == 400
        assert ambiguous.json()["errors"][0]["extensions"] == {"code": "BAD_REQUEST"}


async def test_introspection_shows_doitongs_schema() -> None:
    async with simulated() as sim:
        query = """{
          __schema { mutationType { fields { name args { name type { kind ofType { name } } } } } }
          __type(name: "GenerateInput") { kind inputFields { name } }
        }"""
        data = _data(await sim.graphql(query, {}))
        fields = {f["name"]: f for f in data["__schema"]["mutationType"]["fields"]}
        assert set(fields) == {"generate", "generateAvatar"}
        (argument,) = fields["generate"]["args"]
        assert argument["name"] == "input"
        assert argument["type"] == {"kind": "NON_NULL", "ofType": {"name": "GenerateInput"}}
        assert fields["generateAvatar"]["args"][0]["type"]["ofType"] == {"name": "AvatarGenerationInput"}
        assert data["__type"]["kind"] == "INPUT_OBJECT"
        assert {f["name"] for f in data["__type"]["inputFields"]} == {
            "type",
            "provider",
            "input",
            "options",
            "webhookUrl",
        }
        generation = _data(await sim.graphql('{ __type(name: "Generation") { fields { name } } }', {}))
        assert {f["name"] for f in generation["__type"]["fields"]} == GENERATED


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "mentions"),
    [
        ("mutation Generate($input: GenerateInput!) { generate(input: $input) { id }", "Syntax Error"),
        ("mutation Generate($input: GenerateInput!) { generate(input: $input) { id nope } }", "nope"),
        ("mutation Generate($input: GenerateInput!) { generate(input: $input) }", "selection"),
        ("mutation Generate($input: String!) { generate(input: $input) { id } }", "String!"),
        ("query { generate { id } }", "generate"),
    ],
)
async def test_syntax_and_validation_errors_are_400_bad_request_in_the_documented_form(
    query: str, mentions: str
) -> None:
    async with simulated() as sim:
        answer = await sim.graphql(query, {"input": generate_input()})
        assert answer.status_code == 400, answer.text
        document = answer.json()
        assert list(document) == ["errors"]
        for error in document["errors"]:
            assert error["extensions"] == {"code": "BAD_REQUEST"}
            assert isinstance(error["message"], str)
        assert any(mentions in error["message"] for error in document["errors"]), document
        assert sim.simulator.credits(KEY) == 10_000
        assert (await sim.stats())["requests"]["bad_requests"] == 1


@pytest.mark.parametrize(
    "variables",
    [
        {"input": {**generate_input(), "colour": "red"}},  # a field the input type does not have
        {"input": {**generate_input(), "input": {"text": TEXT}}},  # avatarId is required
        {"input": "AVATAR"},
        {"input": None},
    ],
)
async def test_variables_that_do_not_fit_the_schema_are_400_bad_request(variables: dict[str, Any]) -> None:
    async with simulated() as sim:
        query = "mutation Generate($input: GenerateInput!) { generate(input: $input) { id } }"
        answer = await sim.graphql(query, variables)
        assert answer.status_code == 400, answer.text
        assert answer.json()["errors"][0]["extensions"] == {"code": "BAD_REQUEST"}
        assert sim.simulator.credits(KEY) == 10_000


async def test_an_unknown_id_nulls_only_its_own_field() -> None:
    async with simulated() as sim:
        job_id = _data(await sim.generate())["generate"]["id"]
        query = 'query($id: ID!) { known: avatar(id: $id) { id } unknown: avatar(id: "nosuchjob123") { id } }'
        answer = await sim.graphql(query, {"id": job_id})
        assert answer.status_code == 200
        document = answer.json()
        assert document["data"] == {"known": {"id": job_id}, "unknown": None}
        (error,) = document["errors"]
        assert (error["path"], error["extensions"]) == (["unknown"], {"code": "NOT_FOUND"})


async def test_a_refusal_after_another_job_was_made_keeps_that_job_in_the_answer() -> None:
    async with simulated(Account("poor", "pro", 60)) as sim:
        query = """mutation($input: GenerateInput!) {
          first: generate(input: $input) { id creditCost }
          second: generate(input: $input) { id }
        }"""
        answer = await sim.graphql(query, {"input": generate_input()}, key="poor")
        assert answer.status_code == 200  # the first job was made and charged: its id must be told
        document = answer.json()
        assert document["data"]["first"]["creditCost"] == 53
        assert document["data"]["second"] is None
        (error,) = document["errors"]
        assert error["path"] == ["second"]
        assert error["extensions"] == {"code": "INSUFFICIENT_CREDITS", "creditsRequired": 53, "creditsAvailable": 7}
        assert sim.simulator.credits("poor") == 7


async def test_a_bug_in_a_resolver_is_a_500_internal_error_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Job) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Job, "generated", broken)
    async with simulated() as sim:
        with caplog.at_level(logging.ERROR, logger="receiver.simulator"):
            answer = await sim.generate()
        assert answer.status_code == 500
        assert answer.json() == {
            "errors": [{"message": "Internal server error", "extensions": {"code": "INTERNAL_ERROR"}}]
        }
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)


async def test_graphql_answers_are_json_with_the_rate_limit_headers() -> None:
    async with simulated() as sim:
        answer = await sim.graphql("{ __typename }", {})
        assert answer.headers["content-type"] == "application/json"
        assert orjson.loads(answer.content) == {"data": {"__typename": "Query"}}
        assert answer.headers["x-ratelimit-remaining"] == "59"
        unauthenticated = await sim.graphql("{ __typename }", {}, key=None)
        assert unauthenticated.status_code == 401
