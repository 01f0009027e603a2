#!/usr/bin/env bash
# Prepare a Debian 12 host (run as root, no systemd) to run and test Airlock.
# Idempotent: each step checks first and changes only what is missing.
#   - apt: installs missing packages (docker.io, btrfs-progs, debootstrap, ...)
#   - registers crun with the engine (/etc/docker/daemon.json), for AIRLOCK_RUNTIME=crun (the
#     default stays the engine's runc); on a hybrid cgroup layout, first gives the controllers
#     left in the cgroup2 hierarchy (hugetlb here) v1 hierarchies, which crun needs
#   - starts dockerd if the engine does not answer (log /var/log/airlock/dockerd.log)
#   - per-job storage with quotas: btrfs on a sparse loop file
#     /var/lib/airlock/volumes.img mounted at /var/lib/airlock/volumes, quota on
#     (overlay2 on ext4 cannot bound disk use; btrfs qgroups can)
#   - /run/airlock on a tmpfs of its own where it is not in memory already (the host's tables,
#     the jobs' FIFOs)
#   - starts Redis / PostgreSQL if down; creates databases airlock, airlock_test
#   - builds the job containers' launcher (scripts/build-launcher.sh; only when its source changed)
#   - compiles the job containers' AppArmor profile; loads it where the kernel has AppArmor
#   - builds the images (scripts/build-images.sh; arguments are passed to it)
# Env: AIRLOCK_VOLUMES_SIZE (default 64G, sparse; used only when creating the file)
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_DIR=/var/log/airlock
VOLUMES_DIR=/var/lib/airlock/volumes
VOLUMES_IMG=/var/lib/airlock/volumes.img
VOLUMES_SIZE="${AIRLOCK_VOLUMES_SIZE:-64G}"
PG=(psql -h 127.0.0.1 -U postgres -X -q -v ON_ERROR_STOP=1)
export DEBIAN_FRONTEND=noninteractive

START=$SECONDS
SUMMARY=()
log() { printf 'setup-host: %s\n' "$*"; }
note() { SUMMARY+=("$*"); log "$*"; }

[[ $EUID -eq 0 ]] || { log "must run as root"; exit 1; }
mkdir -p "$LOG_DIR"

# --- packages ---------------------------------------------------------------
# prometheus: promtool checks deploy/'s alert rules and dashboard queries; redis-sentinel: the
# Sentinel failover test; apparmor: apparmor_parser compiles (and, where the kernel has
# AppArmor, loads) the job containers' profile.
PACKAGES=(docker.io btrfs-progs debootstrap iptables shellcheck docker-compose
          jq curl iproute2 psmisc chromium chromium-driver gcc libc6-dev crun
          prometheus redis-sentinel apparmor)
command -v psql >/dev/null || PACKAGES+=(postgresql-client)
command -v redis-cli >/dev/null || PACKAGES+=(redis-tools)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG_DIR/apt.log" 2>&1 \
        || { tail -n 30 "$LOG_DIR/apt.log"; log "apt-get install failed"; exit 1; }
    note "packages: installed ${missing[*]}"
else
    note "packages: all present"
fi

# --- crun, registered with the engine -----------------------------------------
# A C runtime: a container costs about 20 ms less host CPU to start and stop than with runc
# (docs/benchmark.md). crun refuses a hybrid cgroup layout (v1 controllers, a cgroup2 mount
# beside them) while the cgroup2 hierarchy holds a controller; here that is hugetlb, which no
# v1 hierarchy has. Mounting it as one moves it there, as runc would use it; nothing changes
# on a pure v1 or a pure v2 host. If this fails, the self-test below unregisters crun.
DAEMON_JSON=/etc/docker/daemon.json
UNIFIED=/sys/fs/cgroup/unified
if [[ "$(stat -fc %T /sys/fs/cgroup)" == tmpfs && -r "$UNIFIED/cgroup.controllers" ]]; then
    read -ra controllers <"$UNIFIED/cgroup.controllers" || true
    for c in "${controllers[@]}"; do
        mkdir -p "/sys/fs/cgroup/$c"
        if mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" 2>/dev/null; then
            note "cgroup: $c moved from the cgroup2 hierarchy to /sys/fs/cgroup/$c (v1), for crun"
        else
            log "cgroup: could not mount $c as a v1 hierarchy; crun may refuse this host"
        fi
    done
fi
mkdir -p "$(dirname "$DAEMON_JSON")"
[[ -s "$DAEMON_JSON" ]] || echo '{}' >"$DAEMON_JSON"
if ! jq -e '.runtimes.crun' "$DAEMON_JSON" >/dev/null; then
    jq '.runtimes.crun = {"path": "/usr/bin/crun"}' "$DAEMON_JSON" >"$DAEMON_JSON.new"
    mv "$DAEMON_JSON.new" "$DAEMON_JSON"
    note "crun: registered in $DAEMON_JSON"
fi
if docker info >/dev/null 2>&1 \
        && ! docker info --format '{{json .Runtimes}}' | jq -e 'has("crun")' >/dev/null; then
    pkill -HUP -x dockerd  # reloads daemon.json's runtimes
    for _ in $(seq 20); do
        docker info --format '{{json .Runtimes}}' | jq -e 'has("crun")' >/dev/null && break
        sleep 0.5
    done
fi

# --- docker engine ----------------------------------------------------------
if docker info >/dev/null 2>&1; then
    note "dockerd: already running"
else
    log "starting dockerd"
    setsid dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        tail -n 50 "$LOG_DIR/dockerd.log"
        log "dockerd did not answer within 60 s"
        exit 1
    fi
    note "dockerd: started (log $LOG_DIR/dockerd.log)"
fi

# --- btrfs volume store with quotas -------------------------------------------
if [[ "$(findmnt -n -o FSTYPE --mountpoint "$VOLUMES_DIR" 2>/dev/null || true)" == btrfs ]]; then
    note "volumes: $VOLUMES_DIR already a btrfs mount"
else
    mkdir -p "$VOLUMES_DIR"
    if [[ ! -e "$VOLUMES_IMG" ]]; then
        truncate -s "$VOLUMES_SIZE" "$VOLUMES_IMG"
        log "created sparse $VOLUMES_IMG ($VOLUMES_SIZE)"
    fi
    if [[ -z "$(blkid -p -o value -s TYPE "$VOLUMES_IMG" 2>/dev/null || true)" ]]; then
        mkfs.btrfs -q -f -L airlock-volumes "$VOLUMES_IMG" >"$LOG_DIR/mkfs.log" 2>&1 \
            || { cat "$LOG_DIR/mkfs.log"; log "mkfs.btrfs failed"; exit 1; }
        log "formatted $VOLUMES_IMG as btrfs"
    fi
    # nosuid,nodev: Docker bind options cannot add them, so the filesystem carries them.
    mount -o loop,nosuid,nodev "$VOLUMES_IMG" "$VOLUMES_DIR"
    note "volumes: mounted $VOLUMES_IMG at $VOLUMES_DIR"
fi
if ! btrfs qgroup show "$VOLUMES_DIR" >/dev/null 2>&1; then
    btrfs quota enable "$VOLUMES_DIR"
    log "btrfs quota enabled on $VOLUMES_DIR"
fi
# Self-test: a 20M write into a subvolume limited to 10M must fail.
probe="$VOLUMES_DIR/.setup-selftest"
[[ -d "$probe" ]] && btrfs subvolume delete "$probe" >/dev/null
btrfs subvolume create "$probe" >/dev/null
btrfs qgroup limit 10M "$probe"
if dd if=/dev/zero of="$probe/fill" bs=1M count=20 conv=fsync status=none 2>/dev/null; then
    btrfs subvolume delete "$probe" >/dev/null
    log "FAIL: btrfs qgroup limit not enforced on $VOLUMES_DIR"
    exit 1
fi
written=$(( $(stat -c %s "$probe/fill") / 1048576 ))
btrfs subvolume delete "$probe" >/dev/null
note "volumes: quota self-test OK (10M limit stopped a 20M write at ${written}M)"

# --- /run/airlock in memory -------------------------------------------------------
# The host's tables (uids, cpusets), the jobs' FIFOs and identity files, the egress registry:
# written several times per job, and stale after a reboot, like the containers they describe.
# Where /run is not a tmpfs (this kind of machine: ext4), each replace of a table flushed it to
# disk; a tmpfs of its own keeps them in memory. Mounted before any worker uses the folder.
if [[ "$(findmnt -n -o FSTYPE -T /run/airlock 2>/dev/null || true)" == tmpfs ]]; then
    note "run dir: /run/airlock is in memory (tmpfs)"
else
    mkdir -p /run/airlock
    mount -t tmpfs -o mode=0755,size=256m,nosuid,nodev airlock-run /run/airlock
    note "run dir: mounted a tmpfs at /run/airlock"
fi

# --- Redis and PostgreSQL ---------------------------------------------------
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    note "redis: running"
else
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 20); do
        redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && break
        sleep 0.5
    done
    redis-cli -h 127.0.0.1 ping | grep -q PONG || { log "redis did not start"; exit 1; }
    note "redis: started"
fi
# Redis holds the queue and each running job's live stream (a window: PostgreSQL keeps outputs
# whole): bound its memory, and let it evict only keys with an expiry (ended jobs' streams),
# never the queue. Only when no bound is set yet: an operator's own choice stays.
if [[ "$(redis-cli -h 127.0.0.1 -p 6379 config get maxmemory 2>/dev/null | sed -n 2p)" == 0 ]]; then
    redis-cli -h 127.0.0.1 -p 6379 config set maxmemory 2gb >/dev/null
    redis-cli -h 127.0.0.1 -p 6379 config set maxmemory-policy volatile-lru >/dev/null
    note "redis: maxmemory 2gb, policy volatile-lru"
fi
if pg_isready -q -h 127.0.0.1 -p 5432; then
    note "postgresql: running"
else
    pg_version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    [[ -n "$pg_version" ]] || { log "no PostgreSQL cluster under /etc/postgresql"; exit 1; }
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
    for _ in $(seq 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p 5432 || { log "postgresql did not start"; exit 1; }
    note "postgresql: started cluster $pg_version/main"
fi
for db in airlock airlock_test; do
    if [[ "$("${PG[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
        "${PG[@]}" -c "CREATE DATABASE $db"
        note "postgresql: created database $db"
    fi
done

# --- the job containers' launcher (PID 1), built static from workers/launcher.c ---------
bash "$ROOT_DIR/scripts/build-launcher.sh"
note "launcher: ${AIRLOCK_LAUNCHER_PATH:-/usr/local/libexec/airlock/airlock-init} up to date"

# --- AppArmor: the job containers' profile (config/apparmor/airlock-job) --------------
# Compiled everywhere (a syntax error stops the set-up); loaded, or reloaded, where the kernel
# has AppArmor: the worker then names it on every job container (AIRLOCK_APPARMOR=auto).
APPARMOR_PROFILE="$ROOT_DIR/config/apparmor/airlock-job"
apparmor_parser -Q -K "$APPARMOR_PROFILE" 2>/dev/null \
    || { apparmor_parser -Q -K "$APPARMOR_PROFILE"; log "AppArmor profile does not compile"; exit 1; }
if [[ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" == Y ]]; then
    apparmor_parser -r -W "$APPARMOR_PROFILE"
    note "apparmor: profile airlock-job loaded (enforce)"
else
    note "apparmor: the kernel has no AppArmor; profile compiled, not loaded (seccomp stands alone)"
fi

# --- images -----------------------------------------------------------------
images_start=$SECONDS
bash "$ROOT_DIR/scripts/build-images.sh" "$@"
note "images: ready in $((SECONDS - images_start)) s"

# --- crun self-test: a hardened container of the jobs' image (always built, whatever
# AIRLOCK_BASE_IMAGE names) must run under it, or crun is unregistered ------------------
if docker run --rm --runtime crun --network none --read-only --cap-drop ALL \
        --security-opt no-new-privileges:true --memory 64m --pids-limit 16 \
        airlock/sandbox:latest true >"$LOG_DIR/crun-selftest.log" 2>&1; then
    note "crun: self-test passed; available to AIRLOCK_RUNTIME=crun (the default stays runc)"
else
    tail -n 5 "$LOG_DIR/crun-selftest.log"
    jq 'del(.runtimes.crun)' "$DAEMON_JSON" >"$DAEMON_JSON.new" && mv "$DAEMON_JSON.new" "$DAEMON_JSON"
    pkill -HUP -x dockerd
    note "crun: refused a container here (log $LOG_DIR/crun-selftest.log); unregistered"
fi

echo
echo "=== setup-host summary ($((SECONDS - START)) s) ==="
printf '  %s\n' "${SUMMARY[@]}"
docker image ls --filter 'reference=airlock/*' --format 'image: {{.Repository}}:{{.Tag}} {{.Size}}' | sed 's/^/  /'
