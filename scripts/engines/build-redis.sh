#!/usr/bin/env bash
# Build Redis 8 (with vector sets) from Debian trixie's source package into .engines/redis/bin.
#
# Debian 12 ships Redis 7, which has no vector sets. Redis 8 compiles them into redis-server
# (modules/vector-sets, unless SKIP_VEC_SETS=yes), so only the server and the CLI are built,
# from the upstream tarball that Debian's source package carries, with its bundled
# dependencies (jemalloc, lua, hiredis...), without TLS or systemd.
#
# The source is fetched by apt with a private configuration under .engines/build/redis/apt
# (a deb-src entry for trixie only, its own package lists and cache): the machine's apt
# sources, lists and preferences are never changed, and no trixie binary package can be
# installed by it.
#
#   scripts/engines/build-redis.sh           build unless .engines/redis/bin/redis-server runs
#   scripts/engines/build-redis.sh --force   rebuild
# Environment: VECMIGRATE_ENGINES_DIR (default <repo>/.engines), REDIS_SUITES (default
# "trixie trixie-security"), DEBIAN_MIRROR (default http://deb.debian.org).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$(pwd)"
ENGINES="${VECMIGRATE_ENGINES_DIR:-$REPO/.engines}"
PREFIX="$ENGINES/redis"
WORK="$ENGINES/build/redis"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org}"
SUITES="${REDIS_SUITES:-trixie trixie-security}"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf 'build-redis: %s\n' "$*" >&2; }

has_vector_sets() {
  # Vector sets are compiled in when the server binary names the VADD command.
  grep -aqw "VADD" "$1" 2>/dev/null
}

if [ "$FORCE" = 0 ] && [ -x "$PREFIX/bin/redis-server" ]; then
  if version="$("$PREFIX/bin/redis-server" --version 2>/dev/null)" \
    && [[ "$version" =~ v=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge 8 ] \
    && has_vector_sets "$PREFIX/bin/redis-server"; then
    log "already built: $version"
    exit 0
  fi
  log "existing $PREFIX/bin/redis-server is not Redis 8 with vector sets: rebuilding"
fi

start=$(date +%s)

# -- build tools (from the machine's own Debian release) -----------------------------------
missing=()
for tool in cc c++ make; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing build tools (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential pkg-config >/dev/null
  else
    log "missing build tools: ${missing[*]} (apt-get install build-essential pkg-config)"
    exit 1
  fi
fi

# -- fetch the source package with a private apt configuration -----------------------------
APT="$WORK/apt"
rm -rf "$APT" "$WORK/download"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/sources.d" "$WORK/download"
: >"$APT/sources.list"
{
  for suite in $SUITES; do
    case "$suite" in
      *-security) uri="$MIRROR/debian-security" ;;
      *) uri="$MIRROR/debian" ;;
    esac
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\n' "$uri" "$suite"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n'
  done
} >"$APT/sources.d/redis-src.sources"
apt_opts=(
  -o "Dir::Etc::SourceList=$APT/sources.list"
  -o "Dir::Etc::SourceParts=$APT/sources.d"
  -o "Dir::State::Lists=$APT/lists"
  -o "Dir::Cache=$APT/cache"
  -o "Acquire::Languages=none"
)
if [ "$(id -u)" = 0 ]; then
  apt_opts+=(-o "APT::Sandbox::User=root")
else
  apt_opts+=(-o "Debug::NoLocking=true")
fi
log "reading the source index of: $SUITES"
apt-get "${apt_opts[@]}" -qq update
version="$(apt-cache "${apt_opts[@]}" showsrc --only-source redis \
  | awk '/^Version:/ {print $2}' | sort -V | tail -1)"
[ -n "$version" ] || { log "no redis source package found in $SUITES"; exit 1; }
log "downloading the source of redis $version"
# apt verifies every file it keeps against the index's checksums. The upstream tarball is all
# that is needed: Debian's patches switch to system libraries, so a missing .dsc or
# .debian.tar.* (some mirrors lack them) is not fatal.
(cd "$WORK/download" && apt-get "${apt_opts[@]}" -qq source --download-only "redis=$version") \
  || log "apt could not fetch every file of the source package; using the upstream tarball"
shopt -s nullglob
tarballs=("$WORK/download"/redis_*.orig.tar.*)
shopt -u nullglob
[ "${#tarballs[@]}" = 1 ] || { log "the upstream tarball of redis $version was not fetched"; exit 1; }

# -- build --------------------------------------------------------------------------------
rm -rf "$WORK/src"
mkdir -p "$WORK/src"
tar -xf "${tarballs[0]}" -C "$WORK/src" --strip-components=1
[ -d "$WORK/src/modules/vector-sets" ] || { log "this source has no modules/vector-sets"; exit 1; }
jobs="$(nproc 2>/dev/null || echo 2)"
log "compiling redis-server and redis-cli with $jobs jobs"
make -C "$WORK/src/src" -j"$jobs" BUILD_TLS=no USE_SYSTEMD=no MALLOC=jemalloc \
  redis-server redis-cli >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; log "make failed (full log: $WORK/build.log)"; exit 1; }

mkdir -p "$PREFIX/bin"
install -m 0755 "$WORK/src/src/redis-server" "$WORK/src/src/redis-cli" "$PREFIX/bin/"
has_vector_sets "$PREFIX/bin/redis-server" \
  || { log "the built server has no vector sets"; exit 1; }
printf '%s\n' "$version" >"$PREFIX/DEBIAN_SOURCE_VERSION"
log "built $("$PREFIX/bin/redis-server" --version) in $(($(date +%s) - start)) s"
log "installed into $PREFIX/bin (build folder $WORK can be removed)"
