# Sourced by the build.sh of hack/helm and hack/peers/*: builds Go binaries from the
# calling script's module (its go.mod and go.sum) into a cache outside the clone,
# once, and prints the cache directory on stdout (progress on stderr).
#
#   go_build_cached NAME WHAT CACHE_DIR OVERRIDE_VAR JOBS_VAR MINUTES BINARY... -- GO_BUILD_ARGS...
#
# - NAME: the tool's name in messages and errors (dex, flux, ...).
# - WHAT: what is built, with versions ("dex v2.45.1").
# - CACHE_DIR: below the cache root (${SIGNOFF_CACHE:-~/.cache/signoff}); a hash of
#   go.mod, go.sum, the calling script and this file is appended.
# - OVERRIDE_VAR: the variable that names a directory of prebuilt binaries instead.
# - JOBS_VAR: the variable that raises the build's cores from 1 (GOMAXPROCS, -p);
#   "" builds on one core always.
# - MINUTES: the first build's time, for the message.
# - BINARY...: what the directory must hold (checked after the build, and in the
#   override's directory).
# - GO_BUILD_ARGS: given to `go build -p JOBS -trimpath` with `-o TMP/` (each binary
#   named after its package's last path element), in the calling script's directory,
#   with GOTOOLCHAIN=local, CGO_ENABLED=0 and -mod=mod. A function `go_build_after
#   TMP`, if the caller defines one, finishes the directory before it is checked.
#
# The build runs at the lowest priority (nice 19): it shares the machine with cargo
# builds and timing-sensitive tests. It writes into a temporary directory that is
# moved into place only when complete.
go_build_cached() {
  local name=$1 what=$2 cache_dir=$3 override_var=$4 jobs_var=$5 minutes=$6
  shift 6
  local binaries=()
  while (($#)) && [[ $1 != -- ]]; do binaries+=("$1"); shift; done
  shift
  local here caller b
  caller=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)/$(basename "${BASH_SOURCE[1]}")
  here=$(dirname "$caller")
  local override=${!override_var:-}
  if [[ -n "$override" ]]; then
    for b in "${binaries[@]}"; do
      [[ -x "$override/$b" ]] || {
        echo "$override_var=$override has no executable $b; unset it to build $name from Go modules" >&2
        return 1
      }
    done
    echo "$override"
    return 0
  fi
  local key out
  key=$(cat "$here/go.mod" "$here/go.sum" "$caller" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
  out="${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}/$cache_dir-$key"
  local complete=1
  for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || complete=0; done
  if [[ $complete == 1 ]]; then
    echo "$what: using cached binaries in $out" >&2
    echo "$out"
    return 0
  fi
  command -v go >/dev/null || {
    echo "go not found: install Go (the version $here/go.mod names) to build $name (or set $override_var)" >&2
    return 1
  }
  local jobs=1
  [[ -n "$jobs_var" ]] && jobs=${!jobs_var:-1}
  [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "$jobs_var=$jobs: expected a positive integer" >&2; return 1; }
  echo "$what: building from Go modules into $out" >&2
  echo "  (first time only: about $minutes minutes at nice 19 on one core; later runs reuse the cache)" >&2
  local tmp="$out.tmp.$$" start
  rm -rf "$tmp"; mkdir -p "$tmp"
  start=$(date +%s)
  if ! (cd "$here" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOMAXPROCS=$jobs \
        nice -n 19 go build -p "$jobs" -trimpath -o "$tmp/" "$@"); then
    rm -rf "$tmp"
    return 1
  fi
  # A caller may finish the directory (rename, links) in `go_build_after DIR`.
  if declare -F go_build_after >/dev/null && ! go_build_after "$tmp"; then
    rm -rf "$tmp"
    return 1
  fi
  for b in "${binaries[@]}"; do
    [[ -x "$tmp/$b" ]] || { echo "go build produced no $b" >&2; rm -rf "$tmp"; return 1; }
  done
  mkdir -p "$(dirname "$out")"
  rm -rf "$out"
  mv "$tmp" "$out"
  echo "$what: built in $(( $(date +%s) - start ))s (GOMAXPROCS=$jobs, -p $jobs), ready in $out" >&2
  echo "$out"
}
