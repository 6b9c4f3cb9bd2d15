"""A local stand-in for Doitong's generation API (`receiver simulate`).

It answers Doitong's documented GraphQL (`POST /graphql`: the `generate` and
`generateAvatar` mutations, run by graphql-core against Doitong's schema) and
REST (`POST /v1/avatar`) requests with the documented shapes, errors, credits
and rate limits, and sends the documented webhook, signed with
`X-Doitong-Signature`. Its own conveniences, which Doitong does not document:
the `avatar(id)` query and `GET /v1/avatar/{id}` to poll a job, the
`X-Doitong-Delivery` id, a `processing` webhook before the final one, jobs
that end `failed`, `GET /_simulator/stats`, retries with back-off and the
fault knobs (duplicates, reordering, drops, forged signatures, 500s), counted
so a test or demo can check itself.

It stands alone: of the receiver it uses only `receiver.core`, so a mistake
in the receiver (its signature scheme, say) cannot hide behind shared code.

    config = SimulatorConfig(accounts=(Account("key"),), webhook_secret="s", latency=0.1)
    async with server.running(config) as (simulator, url):
        ...

Modules: `config` (settings and plans), `pricing` (credits and durations),
`ratelimit`, `inputs` (the documented rules for a request's values),
`schema` (the GraphQL schema, its resolvers, running a request), `jobs` (a
job and its documented renderings), `state` (accounts, credits, jobs),
`webhooks` (signing, delivery with retries and per-webhook faults),
`lifecycle` (when each job's webhooks go out), `stats`, `app` (the Starlette
app), `server` (`Simulator` and serving it with uvicorn). The command is
`receiver.cli.simulate`.
"""

from __future__ import annotations

from receiver.simulator.config import Account, SimulatorConfig
from receiver.simulator.server import Simulator, running

__all__ = ["Account", "Simulator", "SimulatorConfig", "running"]
