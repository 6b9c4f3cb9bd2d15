# doitong-receiver: one image for `receiver migrate`, `receiver serve` and `receiver publish`.
#
# The first stage builds the wheel; the second installs only that wheel (with its dependencies), so
# the image runs the package as `pip install doitong-receiver` would, with no source tree beside it:
# the wheel carries the migrations that `receiver migrate` applies.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# receiver/migrations is a link to ../migrations: both are copied, the link stays a link.
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY receiver ./receiver
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && useradd --system --uid 10001 --create-home --home-dir /home/receiver receiver
USER receiver
# RECEIVER_HOME (.receiver, for a development key or an embedded database) resolves here.
WORKDIR /home/receiver

EXPOSE 8080
ENV RECEIVER_HOST=0.0.0.0 RECEIVER_PORT=8080 RECEIVER_LOG_FORMAT=json
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
ENTRYPOINT ["receiver"]
CMD ["serve"]
