"""The simulated API's GraphQL: Doitong's schema, its resolvers, and running one request.

The schema is written from Doitong's documentation: the `generate` mutation of
the curl, Python and GraphQL examples (its result fields are the ones those
examples select; `metadata` is selected without sub-fields, so it is a JSON
scalar) and the `generateAvatar` mutation of the JavaScript example. The
`avatar(id)` query is the simulator's own convenience: the documentation shows
the shape of `data.avatar` but not a query that returns it.

graphql-core parses, validates and executes, so selection sets, aliases,
variables, inline literals, fragments, `operationName` and introspection work
as GraphQL says. How the outcome is answered:

- a body, syntax, validation or variable error: HTTP 400, one documented
  `BAD_REQUEST` error per problem GraphQL found (with its `locations`);
- a resolver refusing (credits, limits, a bad value) when no root field got
  data: the documented error body alone, with that error's HTTP status, as the
  documentation's 402 example shows;
- otherwise HTTP 200 with `data` and any `errors` (`avatar(id)` of an unknown
  id is `data.avatar: null` plus a `NOT_FOUND` error with its `path`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import graphql

from receiver.simulator import inputs
from receiver.simulator.errors import INTERNAL, ApiError, Code, RequestErrors, bad_request
from receiver.simulator.inputs import GenerateInput
from receiver.simulator.jobs import Job

log = logging.getLogger("receiver.simulator.schema")

SDL = '''
"""Doitong's generation API as its documentation shows it (`avatar` is the simulator's own)."""
schema {
  query: Query
  mutation: Mutation
}

"""Any JSON value: the documentation selects `metadata` without sub-fields."""
scalar JSON

"""Where a job is: `processing` until it ends `completed` (or `failed`)."""
enum JobStatus {
  processing
  completed
  failed
}

type Query {
  """A job's current state (a convenience of the simulator, for polling and reconciliation)."""
  avatar(id: ID!): Avatar
}

type Mutation {
  """Start one avatar video (the documented mutation)."""
  generate(input: GenerateInput!): Generation
  """Start one avatar video (the documentation's JavaScript example)."""
  generateAvatar(input: AvatarGenerationInput!): AvatarGeneration
}

"""The documented `$input` of `generate`."""
input GenerateInput {
  """`AVATAR`."""
  type: String!
  """`hedra`."""
  provider: String!
  input: AvatarInput!
  options: GenerateOptions
  """Where the webhooks go (may be given in `options` instead)."""
  webhookUrl: String
}

input AvatarInput {
  """What the avatar says: at most 2 minutes of speech (about 15 characters a second)."""
  text: String!
  avatarId: String!
}

input GenerateOptions {
  voice: String
  language: String
  """`hedra-1.0`."""
  version: String
  webhookUrl: String
}

"""The JavaScript example's `$input` of `generateAvatar` (the REST body's fields)."""
input AvatarGenerationInput {
  """`hedra`."""
  service: String!
  text: String!
  avatarId: String!
  voice: String
  language: String
  """`hedra-1.0`."""
  version: String
  webhookUrl: String
}

"""What `generate` answers."""
type Generation {
  id: ID!
  status: JobStatus!
  type: String!
  provider: String!
  url: String
  """`avatarId`, `voice`, `webhookUrl`, `estimatedDuration` (seconds)."""
  metadata: JSON
  creditCost: Int!
  """ISO-8601 UTC, e.g. `2024-01-01T00:00:00Z`."""
  createdAt: String!
}

"""What `generateAvatar` answers."""
type AvatarGeneration {
  id: ID!
  status: JobStatus!
  videoUrl: String
  webhookUrl: String
  creditCost: Int!
  createdAt: String!
}

"""A job as the documentation's `data.avatar` responses show it."""
type Avatar {
  id: ID!
  status: JobStatus!
  url: String
  webhookUrl: String
  """Seconds of video, once completed."""
  duration: Float
  createdAt: String!
}
'''

# Documents longer than this are parsed and validated each time rather than kept.
_CACHED_QUERY_CHARS = 8192


@dataclass(frozen=True)
class Context:
    """What the resolvers may do, already bound to the caller's account."""

    create: Callable[[GenerateInput], Job]
    find: Callable[[str], Job]


@dataclass(frozen=True)
class Request:
    """A `POST /graphql` body: the GraphQL-over-HTTP `query`, `variables` and `operationName`."""

    query: str
    variables: dict[str, Any]
    operation_name: str | None = None


@dataclass(frozen=True)
class Answer:
    """A 200 answer: the document to send and the error codes in it (for the counters)."""

    document: dict[str, Any]
    codes: list[Code]


def request(body: Any) -> Request:
    """The GraphQL request in a JSON body; ApiError(BAD_REQUEST) when it is not one."""
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object with a `query` string")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise bad_request("`query` is required (a GraphQL document string)")
    variables = body.get("variables")
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise bad_request("`variables` must be a JSON object")
    operation_name = body.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise bad_request("`operationName` must be a string")
    return Request(query, variables, operation_name)


def execute(req: Request, context: Context) -> Answer:
    """Run `req`; an Answer for HTTP 200, or the ApiError that is the whole answer."""
    document = _prepared(req.query)
    result = graphql.execute_sync(
        SCHEMA,
        document,
        context_value=context,
        variable_values=req.variables,
        operation_name=req.operation_name,
    )
    errors = result.errors or []
    if result.data is None:
        # Execution did not start: the variables or the operation to run were wrong.
        raise _refusal(errors) or RequestErrors("BAD_REQUEST", [_formatted(e, "BAD_REQUEST") for e in errors])
    for error in errors:
        if error.original_error is not None and not isinstance(error.original_error, ApiError):
            # A bug of ours, not the caller's: say so in the log, answer as the API would.
            log.error("resolver failed: %s", error.message, exc_info=error.original_error)
            raise ApiError("INTERNAL_ERROR", INTERNAL)
    if errors and all(value is None for value in result.data.values()):
        refusal = _refusal(errors)
        if refusal is not None:
            raise refusal
    answer: dict[str, Any] = {"data": result.data}
    codes = [_code(e) for e in errors]
    if errors:
        answer["errors"] = [_formatted(e, code) for e, code in zip(errors, codes, strict=True)]
    return Answer(answer, codes)


def _prepared(query: str) -> graphql.DocumentNode:
    """`query` parsed and validated against the schema; RequestErrors(BAD_REQUEST) otherwise."""
    check = _parse_and_validate if len(query) <= _CACHED_QUERY_CHARS else _parse_and_validate.__wrapped__
    document, problems = check(query)
    if document is None:
        raise RequestErrors("BAD_REQUEST", [_formatted(e, "BAD_REQUEST") for e in problems])
    return document


@functools.lru_cache(maxsize=256)
def _parse_and_validate(query: str) -> tuple[graphql.DocumentNode | None, tuple[graphql.GraphQLError, ...]]:
    # Clients send the same few documents again and again: parse and validate each once.
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError as error:
        return None, (error,)
    problems = graphql.validate(SCHEMA, document)
    return (None, tuple(problems)) if problems else (document, ())


def _refusal(errors: list[graphql.GraphQLError]) -> ApiError | None:
    """The first error a resolver raised that refuses the request (NOT_FOUND only nulls its field)."""
    for error in errors:
        original = error.original_error
        if isinstance(original, ApiError) and original.code != "NOT_FOUND":
            return original
    return None


def _code(error: graphql.GraphQLError) -> Code:
    original = error.original_error
    return original.code if isinstance(original, ApiError) else "BAD_REQUEST"


def _formatted(error: graphql.GraphQLError, code: Code) -> dict[str, Any]:
    """GraphQL's error entry (message, locations, path) with the documented `extensions`."""
    entry = dict(error.formatted)
    original = error.original_error
    extra = original.extensions if isinstance(original, ApiError) else {}
    entry["extensions"] = {"code": code, **extra}
    return entry


# --- resolvers ---------------------------------------------------------------------------------


def _generate(_root: None, info: graphql.GraphQLResolveInfo[Context], input: dict[str, Any]) -> dict[str, Any]:
    return info.context.create(inputs.generate_input(input)).generated()


def _generate_avatar(_root: None, info: graphql.GraphQLResolveInfo[Context], input: dict[str, Any]) -> dict[str, Any]:
    return info.context.create(inputs.avatar_generation_input(input)).generated_alias()


def _avatar(_root: None, info: graphql.GraphQLResolveInfo[Context], id: str) -> dict[str, Any]:
    if not id:
        raise bad_request("avatar: `id` must not be empty")
    return info.context.find(id).avatar()


def _build() -> graphql.GraphQLSchema:
    schema = graphql.build_schema(SDL)
    resolvers: dict[graphql.GraphQLObjectType | None, dict[str, graphql.GraphQLFieldResolver]] = {
        schema.mutation_type: {"generate": _generate, "generateAvatar": _generate_avatar},
        schema.query_type: {"avatar": _avatar},
    }
    for owner, fields in resolvers.items():
        assert owner is not None
        for name, resolve in fields.items():
            owner.fields[name].resolve = resolve
    return schema


SCHEMA = _build()
