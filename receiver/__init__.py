"""doitong-receiver: verified Doitong webhooks, job history in PostgreSQL, a transactional outbox."""

__version__ = "0.1.0"
