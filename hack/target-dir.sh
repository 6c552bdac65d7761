#!/usr/bin/env bash
# Prints this checkout's Cargo target directory, outside the clone:
#   ${SIGNOFF_CACHE:-~/.cache/signoff}/targets/<checkout name>-<hash of its path>
#
# One directory per checkout: Cargo names a path package's artifacts the same in
# every checkout, so two clones sharing one target directory overwrite each other's
# binaries (and `make dev` in one clone could run the other's).
#
# A new checkout's directory is seeded so a fresh clone (CI) does not rebuild every
# dependency: from the target directory of a checkout that no longer exists, by
# renaming it (instant), or else by copying the most recently used one. Cargo then
# rebuilds only this checkout's own crates (their sources are newer than the copy).
# Directories of deleted checkouts that were not adopted are removed, so the cache
# does not grow with every clone. Progress goes to stderr, the path to stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
cache=${SIGNOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signoff}
targets="$cache/targets"
name="$(basename "$root")-$(printf '%s' "$root" | sha256sum | cut -c1-12)"
dir="$targets/$name"
mkdir -p "$targets"

# Each target directory records the checkout it belongs to.
owner_of() { cat "$1/.signoff-checkout" 2>/dev/null || true; }
orphaned() { local o; o=$(owner_of "$1"); [[ -n "$o" && ! -f "$o/hack/target-dir.sh" ]]; }

if [[ ! -d "$dir" ]]; then
  exec 9>"$targets/.lock"
  flock 9
  if [[ ! -d "$dir" ]]; then
    seed=""
    # Most recently used first: every run touches its directory's record.
    used=$(ls -1t "$targets"/*/.signoff-checkout 2>/dev/null | sed 's|/.signoff-checkout$||' || true)
    for d in $used; do
      if orphaned "$d"; then seed=$d; break; fi
    done
    if [[ -n "$seed" ]]; then
      echo "cargo target: adopting $seed (its checkout $(owner_of "$seed") is gone) as $dir" >&2
      mv "$seed" "$dir"
    else
      newest=$(echo "$used" | head -n1)
      if [[ -n "$newest" ]]; then
        echo "cargo target: seeding $dir with the dependencies built in $newest (first build of this checkout only)" >&2
        tmp="$targets/.seeding-$name.$$"
        trap 'rm -rf "$tmp"' EXIT
        mkdir -p "$tmp"
        # Everything but that checkout's own outputs, which this one rebuilds anyway:
        # its incremental caches and its executables (binaries and test binaries;
        # build scripts, under build/, are dependencies' and stay), and its
        # sanitizer builds (fuzz/run.sh).
        (cd "$newest" && find . \( -path ./fuzz -o -path '*/incremental' \) -prune -o ! -type d \
          ! \( -type f -perm -u+x ! -name 'lib*' ! -path '*/build/*' \) -print) |
          tar -C "$newest" -cf - --no-recursion -T - | tar -C "$tmp" -xpf -
        mv "$tmp" "$dir"
        trap - EXIT
      else
        mkdir -p "$dir"
      fi
    fi
    printf '%s\n' "$root" >"$dir/.signoff-checkout"
    for d in "$targets"/*/; do
      d=${d%/}
      if [[ "$d" != "$dir" ]] && orphaned "$d"; then
        echo "cargo target: removing $d (its checkout $(owner_of "$d") is gone)" >&2
        rm -rf "$d"
      fi
    done
  fi
fi
touch "$dir/.signoff-checkout"
echo "$dir"
