#!/usr/bin/env bash
# Build the Docker images Airlock needs, locally (no registry is reachable):
#   airlock/debian-base:bookworm  debootstrap (minbase) rootfs, cached in
#                                 /var/cache/airlock/rootfs-bookworm, then `docker import`
#   airlock/<name>:latest         from images/<name>/Dockerfile, for each name in IMAGES
# An image that exists is skipped unless --rebuild, or unless its build folder
# changed since it was built (label org.airlock.context-hash).
# Env: AIRLOCK_BASE_IMAGE  use this image as BASE instead of bootstrapping one
#      AIRLOCK_DEBIAN_MIRROR (default http://deb.debian.org/debian)
#      DOCKER_HOST           engine to build on (docker's own variable)
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bookworm
BASE_TAG="airlock/debian-base:${SUITE}"
MIRROR="${AIRLOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_DIR=/var/cache/airlock
ROOTFS="${CACHE_DIR}/rootfs-${SUITE}"
ROOTFS_DONE="${ROOTFS}.complete"   # written only after debootstrap succeeded
LOG_DIR=/var/log/airlock

# Extension point: images/<name>/Dockerfile is built as airlock/<name>:latest,
# in this order, if the folder exists. "sandbox" is required.
IMAGES=(sandbox proxy worker agent)

# The legacy builder works with both Debian's docker.io client and newer
# clients without buildx, and never tries to pull a dockerfile frontend.
export DOCKER_BUILDKIT=0

REBUILD=0
for arg in "$@"; do
    case "$arg" in
        --rebuild) REBUILD=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-images: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { printf 'build-images: %s\n' "$*"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() {
    if [[ -n "${AIRLOCK_BASE_IMAGE:-}" ]]; then
        BASE_TAG="$AIRLOCK_BASE_IMAGE"
        have_image "$BASE_TAG" || { log "AIRLOCK_BASE_IMAGE=$BASE_TAG is not present on the engine"; exit 1; }
        log "base: using $BASE_TAG (AIRLOCK_BASE_IMAGE)"
        return
    fi
    if [[ $REBUILD -eq 0 ]] && have_image "$BASE_TAG"; then
        log "base: $BASE_TAG exists, skipped"
        return
    fi
    local start=$SECONDS
    if [[ $REBUILD -eq 1 || ! -f "$ROOTFS_DONE" || ! -d "$ROOTFS" ]]; then
        log "base: debootstrap --variant=minbase $SUITE from $MIRROR"
        mkdir -p "$CACHE_DIR"
        rm -rf "$ROOTFS" "$ROOTFS.tmp" "$ROOTFS_DONE"
        debootstrap --variant=minbase "$SUITE" "$ROOTFS.tmp" "$MIRROR" \
            > "$LOG_DIR/debootstrap-${SUITE}.log" 2>&1 \
            || { tail -n 30 "$LOG_DIR/debootstrap-${SUITE}.log"; log "debootstrap failed"; exit 1; }
        # apt sources for later `docker build` steps (main + updates + security).
        cat > "$ROOTFS.tmp/etc/apt/sources.list" <<EOF
deb ${MIRROR} ${SUITE} main
deb ${MIRROR} ${SUITE}-updates main
deb http://deb.debian.org/debian-security ${SUITE}-security main
EOF
        # Small image: no downloaded .debs or package lists; the engine
        # provides /dev, resolv.conf, hosts and hostname at run time.
        rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb \
               "$ROOTFS.tmp"/var/cache/apt/*.bin \
               "$ROOTFS.tmp"/var/lib/apt/lists/* \
               "$ROOTFS.tmp"/var/log/* \
               "$ROOTFS.tmp"/dev/* \
               "$ROOTFS.tmp"/etc/resolv.conf \
               "$ROOTFS.tmp"/etc/hostname
        mv "$ROOTFS.tmp" "$ROOTFS"
        date -u +%FT%TZ > "$ROOTFS_DONE"
    else
        log "base: reusing cached rootfs $ROOTFS"
    fi
    log "base: docker import -> $BASE_TAG"
    tar --numeric-owner -C "$ROOTFS" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/bash"]' \
        -c 'LABEL org.airlock.image=debian-base' \
        -m "debootstrap --variant=minbase $SUITE $MIRROR" \
        - "$BASE_TAG" >/dev/null
    log "base: done in $((SECONDS - start)) s"
}

context_hash() {
    # Content hash of a build folder (paths + file contents), of the repository paths
    # it copies in (arguments after the folder, if any) plus the base image's ID, so a
    # re-imported base also triggers a rebuild.
    local dir=$1
    shift
    (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
     if (($#)); then
         cd "$ROOT_DIR" && find "$@" -type f -not -path '*/__pycache__/*' -print0 \
             | LC_ALL=C sort -z | xargs -0 sha256sum
     fi
     echo "BASE=$BASE_TAG $(docker image inspect -f '{{.Id}}' "$BASE_TAG")") \
        | sha256sum | cut -c1-16
}

build_image() {
    local name=$1 dir="$ROOT_DIR/images/$1" tag="airlock/$1:latest"
    if [[ ! -f "$dir/Dockerfile" ]]; then
        if [[ "$name" == sandbox ]]; then
            log "images/sandbox/Dockerfile is missing"; exit 1
        fi
        log "$tag: no images/$name/Dockerfile, skipped"
        return
    fi
    # A Dockerfile with "# build-context: repo PATH..." builds from the repository root
    # (it installs the project) and is rebuilt when those paths change.
    local hash current old_id context="$dir" repo_paths=()
    read -ra repo_paths <<<"$(sed -n 's/^# build-context: repo //p' "$dir/Dockerfile")"
    ((${#repo_paths[@]})) && context="$ROOT_DIR"
    hash=$(context_hash "$dir" "${repo_paths[@]}")
    old_id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    if [[ $REBUILD -eq 0 ]] && have_image "$tag"; then
        current=$(docker image inspect -f '{{index .Config.Labels "org.airlock.context-hash"}}' "$tag")
        if [[ "$current" == "$hash" ]]; then
            log "$tag: up to date, skipped"
            return
        fi
        log "$tag: images/$name or its base changed since last build, rebuilding"
    fi
    local args=(--label "org.airlock.context-hash=$hash" -t "$tag" -f "$dir/Dockerfile")
    if grep -Eq '^[[:space:]]*ARG[[:space:]]+BASE([=[:space:]]|$)' "$dir/Dockerfile"; then
        args+=(--build-arg "BASE=$BASE_TAG")
    fi
    # Where this host's egress intercepts TLS, a build that downloads (pip) needs the CA
    # certificates the host added; the Dockerfile says so with ARG EXTRA_CA_CERTS.
    if grep -Eq '^[[:space:]]*ARG[[:space:]]+EXTRA_CA_CERTS' "$dir/Dockerfile" \
            && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        args+=(--build-arg "EXTRA_CA_CERTS=$(cat /usr/local/share/ca-certificates/*.crt)")
    fi
    [[ $REBUILD -eq 1 ]] && args+=(--no-cache)
    local start=$SECONDS
    local build_log="$LOG_DIR/build-$name.log"
    log "$tag: docker build images/$name (log: $build_log)"
    docker build "${args[@]}" "$context" >"$build_log" 2>&1 \
        || { tail -n 40 "$build_log"; log "$tag: docker build failed"; exit 1; }
    # Drop the superseded image (fails harmlessly if containers still use it).
    if [[ -n "$old_id" && "$old_id" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    log "$tag: built in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}'))"
}

mkdir -p "$LOG_DIR"
docker info >/dev/null 2>&1 || { log "docker engine not reachable (run scripts/setup-host.sh)"; exit 1; }
build_base
for name in "${IMAGES[@]}"; do
    build_image "$name"
done
