#!/usr/bin/env bash
# A backend in shell: submit a job with curl, follow its events (SSE), read its result.
# Usage: session.sh URL KEY; prints the events, then the result's verdict and stdout.
set -euo pipefail
url=$1 key=$2
auth=(-H "Authorization: Bearer $key")
id=$(curl -sf "${auth[@]}" -H 'Content-Type: application/json' \
        -d '{"code": "print(6*7)"}' "$url/v1/jobs" | jq -r .id)
echo "submitted $id"
curl -sfN "${auth[@]}" "$url/v1/jobs/$id/events" | sed -n 's/^event: //p'
curl -sf "${auth[@]}" "$url/v1/jobs/$id" | jq -r '"verdict \(.verdict) stdout \(.stdout | rtrimstr("\n"))"'
