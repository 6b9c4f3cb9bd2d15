"""Where outbox events go: HTTP subscribers, NATS JetStream, RabbitMQ.

Every sink takes the same `Message` (the envelope bytes, stored once in
`outbox_events.payload`, so the `id` and body never change across retries,
replays or sinks) and answers with a `Result` the publisher turns into a
delivery state.
"""
