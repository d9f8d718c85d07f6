#!/usr/bin/env bash
# A Docker engine and a PostgreSQL image for DB_BACKEND=testcontainers, without any image registry.
#
#   scripts/docker-postgres-image.sh [up]   start an engine if none answers (installing docker.io
#                                           if needed), build the image if missing, print its tag
#                                           as the last line of stdout
#   scripts/docker-postgres-image.sh stop   stop the engine this script started, and nothing else
#
# The image is made from this machine's own PostgreSQL (/usr/lib/postgresql/$PG_MAJOR and
# /usr/share/postgresql/$PG_MAJOR), the libraries ldd lists for it, and busybox for sh, then
# `docker import`ed. Its entrypoint honours POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB like
# the official image, and accepts TCP connections only once that database exists.
#
# Environment: PG_MAJOR (default 15), CRON_DRYRUN_IMAGE_TAG (default cron-dryrun/postgres:$PG_MAJOR-local),
# CRON_DRYRUN_STATE_DIR (pid file and dockerd log; default /run/cron-dryrun, /tmp/... if not root).
# Installing and starting the engine needs root; building the image needs only an engine.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
TAG="${CRON_DRYRUN_IMAGE_TAG:-cron-dryrun/postgres:${PG_MAJOR}-local}"
if [[ $(id -u) -eq 0 ]]; then
    STATE_DIR="${CRON_DRYRUN_STATE_DIR:-/run/cron-dryrun}"
else
    STATE_DIR="${CRON_DRYRUN_STATE_DIR:-${TMPDIR:-/tmp}/cron-dryrun-$(id -u)}"
fi
PID_FILE="$STATE_DIR/dockerd.pid"
DOCKERD_LOG="$STATE_DIR/dockerd.log"
PG_LIB="/usr/lib/postgresql/$PG_MAJOR"
PG_SHARE="/usr/share/postgresql/$PG_MAJOR"
PG_UID=999
ENGINE_WAIT_S=30     # bound on waiting for a started dockerd to answer
STOP_WAIT_S=30       # bound on waiting for it to exit after SIGTERM
APT_LOCK_WAIT_S=120  # bound on waiting for another apt/dpkg to finish

log() { printf '[docker-postgres-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

apt_install() {
    [[ $(id -u) -eq 0 ]] || die "installing $* needs root (or install it yourself: apt-get install $*)"
    local apt=(apt-get -y -q --no-install-recommends -o "DPkg::Lock::Timeout=$APT_LOCK_WAIT_S")
    local apt_log="$STATE_DIR/apt.log"
    mkdir -p "$STATE_DIR"
    log "installing $* (apt-get; log: $apt_log)"
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "$@" >>"$apt_log" 2>&1; then
        log "install failed; refreshing the package lists once and retrying"
        if ! { DEBIAN_FRONTEND=noninteractive apt-get -q -o "DPkg::Lock::Timeout=$APT_LOCK_WAIT_S" update &&
            DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "$@"; } >>"$apt_log" 2>&1; then
            tail -n 20 "$apt_log" >&2 || true
            die "apt-get install $* failed (log above: $apt_log)"
        fi
    fi
}

# The pid recorded by this script, if that process is still the dockerd it started.
our_dockerd_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == dockerd ]] || return 1
    printf '%s\n' "$pid"
}

start_engine() {
    if engine_answers; then
        log "a Docker engine answers; using it"
        return 0
    fi
    if [[ -n ${DOCKER_HOST:-} && ${DOCKER_HOST} != unix:///var/run/docker.sock ]]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer; this script only starts an engine on the default socket (unset DOCKER_HOST)"
    fi
    [[ $(id -u) -eq 0 ]] || die "no Docker engine answers and starting one needs root (or start Docker yourself)"
    if ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io
        # Where services may start (no policy-rc.d), the package may have started one already.
        if engine_answers; then
            log "the docker.io package started an engine; using it (not ours to stop)"
            return 0
        fi
    fi
    command -v docker >/dev/null 2>&1 || die "docker CLI missing after installing docker.io"
    mkdir -p "$STATE_DIR"
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: its own session, so that the caller's terminal or job control does not signal it.
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    local deadline=$((SECONDS + ENGINE_WAIT_S)) tries=0
    until engine_answers; do
        tries=$((tries + 1))
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited before answering (log above: $DOCKERD_LOG)"
        fi
        if ((SECONDS >= deadline || tries >= ENGINE_WAIT_S * 4)); then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd (pid $pid) did not answer within ${ENGINE_WAIT_S}s; stop it with: $0 stop"
        fi
        sleep 0.25
    done
    log "dockerd (pid $pid) answers after ${tries} polls"
}

stop_engine() {
    local pid
    if ! pid=$(our_dockerd_pid); then
        rm -f "$PID_FILE"
        log "no engine started by this script is running; nothing to stop"
        return 0
    fi
    log "stopping dockerd (pid $pid), started by this script"
    kill -TERM "$pid"
    local deadline=$((SECONDS + STOP_WAIT_S))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "dockerd did not exit within ${STOP_WAIT_S}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    log "dockerd stopped"
}

# What the image is made of: a rebuild happens when this script or the PostgreSQL build changes.
fingerprint() {
    { cat "${BASH_SOURCE[0]}"; "$PG_LIB/bin/postgres" --version; } | sha256sum | cut -c1-16
}

busybox_path() {
    local candidate
    for candidate in /bin/busybox /usr/bin/busybox; do
        [[ -x $candidate ]] && { printf '%s\n' "$candidate"; return 0; }
    done
    return 1
}

write_entrypoint() {
    cat >"$1" <<'ENTRYPOINT'
#!/bin/sh
# cron-dryrun local PostgreSQL image (scripts/docker-postgres-image.sh). Like the official image:
# POSTGRES_USER (default postgres), POSTGRES_PASSWORD, POSTGRES_DB (default $POSTGRES_USER),
# POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS. The first-run setup listens on the unix
# socket only, so no TCP client can connect before the database exists.
set -eu
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "error: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile=""
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        pwfile="$(mktemp)"
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    fi
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
    initdb -D "$PGDATA" --username="$POSTGRES_USER" ${pwfile:+--pwfile="$pwfile"} \
        --encoding=UTF8 --locale=C --auth-local=trust --auth-host="$auth" --no-sync \
        ${POSTGRES_INITDB_ARGS:-}
    [ -z "$pwfile" ] || rm -f "$pwfile"
    printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
    if [ "$POSTGRES_DB" != postgres ]; then
        printf 'CREATE DATABASE :"db";\n' | psql -X -q -v ON_ERROR_STOP=1 -v db="$POSTGRES_DB" \
            --host=/var/run/postgresql --username="$POSTGRES_USER" --dbname=postgres
    fi
    pg_ctl -D "$PGDATA" -w -t 60 -m fast stop
    echo "PostgreSQL init process complete; ready for start up."
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
ENTRYPOINT
    chmod 0755 "$1"
}

build_image() {
    local want have
    [[ -x $PG_LIB/bin/postgres && -x $PG_LIB/bin/psql ]] ||
        apt_install "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR"
    want=$(fingerprint)
    if have=$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$TAG" 2>/dev/null); then
        if grep -qx "CRON_DRYRUN_IMAGE_FINGERPRINT=$want" <<<"$have"; then
            log "image $TAG is present and up to date"
            return 0
        fi
        log "image $TAG is out of date; rebuilding"
    fi
    local busybox
    busybox=$(busybox_path) || { apt_install busybox-static; busybox=$(busybox_path); }

    local work root
    work=$(mktemp -d "${TMPDIR:-/tmp}/cron-dryrun-image.XXXXXX")
    # shellcheck disable=SC2064 # expand $work now: it is local to this function
    trap "rm -rf '$work'" EXIT
    root="$work/rootfs"
    mkdir -p "$root"/{usr/bin,usr/lib,usr/lib64,usr/local/bin,etc,tmp,var/lib/postgresql/data,var/run/postgresql}
    mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql" "$root/usr/share/zoneinfo"
    # Debian 12 is merged-/usr: /lib, /lib64 and /bin are links into /usr, as on the host.
    ln -s usr/bin "$root/bin"
    ln -s usr/bin "$root/sbin"
    ln -s usr/lib "$root/lib"
    ln -s usr/lib64 "$root/lib64"
    chmod 1777 "$root/tmp"

    # PostgreSQL itself, without the LLVM JIT (it would need libLLVM, ~100 MB; jit is simply off).
    cp -a "$PG_LIB" "$root/usr/lib/postgresql/"
    rm -rf "$root$PG_LIB/lib/bitcode" "$root$PG_LIB"/lib/llvmjit*
    cp -a "$PG_SHARE" "$root/usr/share/postgresql/"
    # Debian builds PostgreSQL --with-system-tzdata=/usr/share/zoneinfo.
    if [[ -d /usr/share/zoneinfo ]]; then
        cp -a /usr/share/zoneinfo/. "$root/usr/share/zoneinfo/"
        rm -rf "$root/usr/share/zoneinfo/right"
    fi

    # The shared libraries of every binary and module, with the dynamic loader.
    local -a elves=()
    mapfile -t elves < <(find "$root$PG_LIB/bin" "$root$PG_LIB/lib" -type f \( -perm -u=x -o -name '*.so' \))
    [[ $busybox == /usr/bin/busybox || $busybox == /bin/busybox ]] && elves+=("$busybox")
    local lib
    while IFS= read -r lib; do
        cp -L --parents "$lib" "$root/"
    done < <(ldd "${elves[@]}" 2>/dev/null | awk '
        $2 == "=>" && $3 ~ /^\// { print $3 }
        $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' | sort -u)

    # busybox: sh and the basic tools; the real psql comes first on PATH.
    cp -L "$busybox" "$root/usr/bin/busybox"
    local applet
    while IFS= read -r applet; do
        [[ -e $root/usr/bin/$applet ]] || ln -s busybox "$root/usr/bin/$applet"
    done < <("$busybox" --list)

    printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:%s:%s:PostgreSQL:/var/lib/postgresql:/bin/sh\n' \
        "$PG_UID" "$PG_UID" >"$root/etc/passwd"
    printf 'root:x:0:\npostgres:x:%s:\n' "$PG_UID" >"$root/etc/group"
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
    write_entrypoint "$root/usr/local/bin/docker-entrypoint.sh"

    # Everything root-owned, except what PostgreSQL writes, owned by postgres (no chown needed).
    local tarball="$work/rootfs.tar"
    tar -C "$root" --numeric-owner --owner=0 --group=0 \
        --exclude=./var/lib/postgresql --exclude=./var/run/postgresql -cf "$tarball" .
    chmod 0700 "$root/var/lib/postgresql/data"
    chmod 2775 "$root/var/run/postgresql"
    tar -C "$root" --numeric-owner --owner="$PG_UID" --group="$PG_UID" \
        -rf "$tarball" ./var/lib/postgresql ./var/run/postgresql

    log "importing $(du -h "$tarball" | cut -f1) root filesystem as $TAG"
    docker import \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["postgres"]' \
        --change "ENV PATH=$PG_LIB/bin:/usr/local/bin:/usr/bin:/bin" \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'ENV LANG=C' \
        --change "ENV PG_MAJOR=$PG_MAJOR" \
        --change "ENV CRON_DRYRUN_IMAGE_FINGERPRINT=$want" \
        --change "USER $PG_UID" \
        --change 'WORKDIR /var/lib/postgresql' \
        --change 'EXPOSE 5432' \
        - "$TAG" <"$tarball" >/dev/null
    rm -rf "$work"
    trap - EXIT
}

main() {
    local command="${1:-up}"
    case "$command" in
        up)
            start_engine
            build_image
            printf '%s\n' "$TAG"
            ;;
        stop)
            stop_engine
            ;;
        -h | --help | help)
            sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            ;;
        *)
            die "unknown command '$command' (expected: up, stop)"
            ;;
    esac
}

main "$@"
