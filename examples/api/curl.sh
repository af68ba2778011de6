#!/bin/sh
# Schedule a job through the nexus-schedd HTTP API with curl, read it back, list its runs.
#
#   NEXUS_API_TOKEN=... [NEXUS_API_URL=http://127.0.0.1:8470/api/v1] sh examples/api/curl.sh
#
# Needs an admin token ([[api.tokens]] with scope = "admin") and a daemon with the
# built-in "log" handler. Only curl and a POSIX shell; no jq.
set -eu

: "${NEXUS_API_TOKEN:?set NEXUS_API_TOKEN to an admin token of nexus-schedweb}"
API="${NEXUS_API_URL:-http://127.0.0.1:8470/api/v1}"
AUTH="Authorization: Bearer ${NEXUS_API_TOKEN}"
# The same key with the same body within 24 h returns the first reply and adds nothing.
KEY="curl-example-$(date +%s)-$$"

echo "== POST $API/jobs (Idempotency-Key: $KEY)"
reply=$(curl -sS --fail-with-body -X POST "$API/jobs" \
    -H "$AUTH" -H "Content-Type: application/json" -H "Idempotency-Key: $KEY" \
    --data '{"job_type": "log", "target_id": "invoice-42",
             "payload": {"message": "hello from curl"}, "max_retries": 1}')
echo "$reply"
id=$(printf '%s' "$reply" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || { echo "no job id in the reply" >&2; exit 1; }

echo "== the same request again: the first reply, nothing added"
curl -sS --fail-with-body -o /dev/null -w "HTTP %{http_code}\n" -X POST "$API/jobs" \
    -H "$AUTH" -H "Content-Type: application/json" -H "Idempotency-Key: $KEY" \
    --data '{"job_type": "log", "target_id": "invoice-42",
             "payload": {"message": "hello from curl"}, "max_retries": 1}'

echo "== GET $API/jobs/$id"
curl -sS --fail-with-body -H "$AUTH" "$API/jobs/$id"
echo

echo "== GET $API/runs?job_id=$id (the job was due at once; wait for its run)"
tries=0
while :; do
    runs=$(curl -sS --fail-with-body -H "$AUTH" "$API/runs?job_id=$id&limit=10")
    case "$runs" in
        *'"outcome":"success"'*) break ;;
    esac
    tries=$((tries + 1))
    [ "$tries" -lt 50 ] || { echo "no finished run yet: $runs" >&2; exit 1; }
    sleep 0.2
done
echo "$runs"
