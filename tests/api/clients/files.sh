#!/usr/bin/env bash
# A backend in shell giving a job files and taking its files back, with curl and jq only.
# Usage: files.sh URL KEY DIR. Sends DIR/job.json as the job, DIR/input.bin as in/data.bin
# and DIR/tools.tar.gz as its archive (multipart/form-data); lists what it collected;
# downloads out/copy.bin into DIR and checks it against the checksum the API gave.
set -euo pipefail
url=$1 key=$2 dir=$3
auth=(-H "Authorization: Bearer $key")
id=$(curl -sf "${auth[@]}" "$url/v1/jobs?wait=60" \
        -F "spec=<$dir/job.json;type=application/json" \
        -F "in/data.bin=@$dir/input.bin" \
        -F "archive=@$dir/tools.tar.gz;type=application/gzip" | jq -r .id)
echo "submitted $id"
curl -sf "${auth[@]}" "$url/v1/jobs/$id/files" \
  | jq -r '.files[] | "\(.status) \(.size) \(.sha256[:12]) \(.path)"'
curl -sf "${auth[@]}" -D "$dir/headers" -o "$dir/copy.bin" "$url/v1/jobs/$id/files/out/copy.bin"
etag=$(sed -n 's/^etag: "\(.*\)"\r$/\1/Ip' "$dir/headers")
echo "$etag  $dir/copy.bin" | sha256sum --check --status && echo "copy.bin matches its ETag"
