# doitong-receiver: one image for `receiver migrate`, `receiver serve` and (later) `receiver publish`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The source tree stays in the image: `receiver migrate` reads migrations/ beside the package.
COPY pyproject.toml README.md alembic.ini ./
COPY receiver ./receiver
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . \
 && useradd --system --uid 10001 receiver
USER receiver

EXPOSE 8080
ENV RECEIVER_HOST=0.0.0.0 RECEIVER_PORT=8080 RECEIVER_LOG_FORMAT=json
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
ENTRYPOINT ["receiver"]
CMD ["serve"]
