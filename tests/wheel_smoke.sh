#!/usr/bin/env bash
# The receiver as a user installs it: build a wheel, install it into a fresh venv outside the
# checkout, and from another folder run `receiver run` (embedded PostgreSQL), accept one signed
# webhook, fetch the console's login page and script (package data), `receiver migrate` a fresh
# database, then `receiver demo` and `receiver simulate --help`.
# Needs only Python: the database server is the embedded one `receiver run` starts. Called by
# `make wheel-smoke` (and so `make test`).
#
#   tests/wheel_smoke.sh PYTHON
#
# PYTHON (3.11+, with pip >= 22.3) builds the wheel and creates the venv. Dependencies are installed
# from a wheelhouse (.venv/wheelhouse, or $WHEELHOUSE) filled on the first run, so later installs
# need no index and take seconds (building the wheel still fetches setuptools, or takes pip's cache). Everything lives in one temporary folder, removed on exit, failure included.
set -euo pipefail

PYTHON=${1:?usage: tests/wheel_smoke.sh PYTHON}
PYTHON=$(command -v "$PYTHON")
CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)
WHEELHOUSE=${WHEELHOUSE:-$CHECKOUT/.venv/wheelhouse}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/receiver-wheel-smoke.XXXXXX")
RECEIVER_PID=
STARTED=$SECONDS

step() { printf 'wheel-smoke %3ds  %s\n' $((SECONDS - STARTED)) "$*"; }

cleanup() {
    local status=$?
    if [[ -n $RECEIVER_PID ]] && kill -0 "$RECEIVER_PID" 2>/dev/null; then
        kill -TERM "$RECEIVER_PID" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$RECEIVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$RECEIVER_PID" 2>/dev/null || true
        wait "$RECEIVER_PID" 2>/dev/null || true
    fi
    # `receiver run` stops its PostgreSQL on exit; if it could not (killed), stop it here, so no
    # server outlives the smoke or loses its data folder while running.
    local pidfile postmaster log
    for pidfile in "$WORK"/*/pgdata/postmaster.pid; do
        [[ -f $pidfile ]] || continue
        postmaster=$(head -n 1 "$pidfile")
        kill -INT "$postmaster" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$postmaster" 2>/dev/null || break; sleep 0.1; done
    done
    if [[ $status -ne 0 ]]; then
        for log in "$WORK"/run.log "$WORK"/demo.log; do
            [[ -f $log ]] && { echo "--- $(basename "$log") ---" >&2; cat "$log" >&2; }
        done
    fi
    rm -rf "$WORK"
    if [[ $status -eq 0 ]]; then step "passed"; else echo "wheel-smoke: FAILED" >&2; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The wheel is built from a copy of what the package is made of, so setuptools' build/ folder in
# the checkout (which keeps files deleted since) cannot slip old modules into it.
step "building the wheel"
mkdir -p "$WORK/src" "$WORK/dist"
cp -a "$CHECKOUT/pyproject.toml" "$CHECKOUT/README.md" "$CHECKOUT/receiver" "$CHECKOUT/migrations" "$WORK/src/"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/doitong_receiver-*.whl)

step "installing $(basename "$WHEEL") into a fresh venv"
"$PYTHON" -m venv --without-pip "$WORK/venv"
install() {
    "$PYTHON" -m pip --python "$WORK/venv/bin/python" install --quiet --no-compile \
        --no-index --find-links "$WHEELHOUSE" "$WHEEL" >"$WORK/install.log" 2>&1
}
if ! install; then
    step "filling the wheelhouse $WHEELHOUSE (first run)"
    "$PYTHON" -m pip download --quiet --dest "$WHEELHOUSE" "$WHEEL" >"$WORK/download.log" 2>&1 ||
        { cat "$WORK/download.log" >&2; exit 1; }
    rm -f "$WHEELHOUSE"/doitong_receiver-*.whl
    install || { cat "$WORK/install.log" >&2; exit 1; }
fi

# From here on: another folder, no checkout on the path, none of the caller's settings.
cd "$WORK"
unset PYTHONPATH
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(DATABASE_URL|RECEIVER_|DOITONG_)' || true)
VENV_PY=$WORK/venv/bin/python
RECEIVER=$WORK/venv/bin/receiver
LOCATION=$("$VENV_PY" -c 'import receiver; print(receiver.__file__)')
[[ $LOCATION == "$WORK/venv/"* ]] || { echo "receiver imported from $LOCATION, not the venv" >&2; exit 1; }

PORT=$("$VENV_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SECRET=whsec_smoke_$("$VENV_PY" -c 'import secrets; print(secrets.token_hex(8))')
export RECEIVER_HOME=$WORK/home RECEIVER_PORT=$PORT DOITONG_WEBHOOK_SECRET=$SECRET PYTHONUNBUFFERED=1

step "receiver run (embedded PostgreSQL) on port $PORT"
"$RECEIVER" run >"$WORK/run.log" 2>&1 &
RECEIVER_PID=$!

# One signed webhook, signed here with hmac as Doitong signs (not with the receiver's code), must be
# accepted; the answer's revision is what `receiver migrate` must reach below.
REVISION=$("$VENV_PY" - "$PORT" "$SECRET" "$RECEIVER_PID" <<'PY'
import hashlib, hmac, json, os, sys, time, urllib.error, urllib.request

port, secret, pid = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 45
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("receiver run exited before it was ready")
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=1) as answer:
            revision = json.load(answer)["revision"]
            break
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        if time.monotonic() > deadline:
            sys.exit("receiver run was not ready within 45s")
        time.sleep(0.2)

body = json.dumps({"id": "job_wheel_smoke", "status": "completed", "url": "https://cdn.doitong.com/o.mp4",
                   "service": "hedra", "createdAt": "2024-01-01T00:00:00Z",
                   "completedAt": "2024-01-01T00:01:00Z"}).encode()
request = urllib.request.Request(base + "/webhooks/doitong", data=body, method="POST", headers={
    "Content-Type": "application/json",
    "X-Doitong-Signature": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
})
try:
    with urllib.request.urlopen(request, timeout=10) as answer:
        status, document = answer.status, json.load(answer)
except urllib.error.HTTPError as refused:
    status, document = refused.code, json.load(refused)
if status != 200 or document.get("status") != "accepted":
    sys.exit(f"webhook answered {status} {document}, expected 200 with status accepted")
# The console's templates and assets are package data: served from the wheel, not the checkout.
for path, expected in (("/console/login", b"Sign in to the console"), ("/console/static/console.js", b"use strict")):
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        if answer.status != 200 or expected not in answer.read():
            sys.exit(f"{path} answered {answer.status} without {expected!r}: not in the wheel?")
print(revision)
PY
)
step "signed webhook accepted; schema at $REVISION"
grep -q "console     : http://127.0.0.1:$PORT/console/login#token=$(cat "$WORK/home/console_token")" "$WORK/run.log" ||
    { echo "receiver run did not print the console's sign-in link" >&2; exit 1; }
step "console served from the wheel; its sign-in link printed"

# A second, empty database on the same embedded server, reached through the URL `receiver run` printed.
PRINTED=$(sed -n 's/^ *database *: //p' "$WORK/run.log")
FRESH_URL=${PRINTED/\/receiver\?//wheel_smoke_fresh?}
[[ $FRESH_URL != "$PRINTED" ]] || { echo "cannot read the database URL from: $PRINTED" >&2; exit 1; }
"$VENV_PY" -c 'import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("CREATE DATABASE wheel_smoke_fresh")' "$PRINTED"
step "receiver migrate on a fresh database"
MIGRATED=$(DATABASE_URL=$FRESH_URL "$RECEIVER" migrate)
[[ $MIGRATED == "schema at $REVISION" ]] || { echo "receiver migrate said: $MIGRATED" >&2; exit 1; }

step "stopping receiver run"
kill -TERM "$RECEIVER_PID"
wait "$RECEIVER_PID" || { echo "receiver run exited with $?" >&2; exit 1; }
RECEIVER_PID=
[[ ! -e $WORK/home/pgdata/postmaster.pid ]] || { echo "the embedded PostgreSQL is still running" >&2; exit 1; }

step "receiver demo --jobs 3 and receiver simulate --help"
RECEIVER_HOME=$WORK/demo-home "$RECEIVER" demo --no-live --jobs 3 --timeout 60s </dev/null >"$WORK/demo.log" 2>&1
grep -q '^PASSED' "$WORK/demo.log" || { echo "receiver demo did not pass" >&2; exit 1; }
"$RECEIVER" simulate --help >/dev/null
