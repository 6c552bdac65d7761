#!/usr/bin/env bash
# Builds signoff's container image without pulling anything: static (musl) release
# binaries of signoff and kubectl-signoff, assembled into an OCI image with umoci
# (Debian's), FROM scratch plus CA certificates and a passwd entry for the non-root
# user 65532, as the Dockerfile's distroless image has them. Writes an OCI archive
# and prints its path:
#   $CARGO_TARGET_DIR/image/signoff-<version>.oci.tar  (tag <version>, the crate's)
# Needs the x86_64-unknown-linux-musl Rust target, musl-tools, umoci and
# ca-certificates (installed here when missing, as root).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$(hack/target-dir.sh)}
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
triple=x86_64-unknown-linux-musl

missing=()
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v umoci >/dev/null || missing+=(umoci)
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if ((${#missing[@]})); then
  echo "image: installing ${missing[*]} from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >&2

echo "image: building static release binaries ($triple)" >&2
CC_x86_64_unknown_linux_musl=musl-gcc CARGO_TARGET_DIR="$target_dir" \
  cargo build --release --locked --target "$triple" --bin signoff --bin kubectl-signoff >&2
bin="$target_dir/$triple/release"

out="$target_dir/image"
work="$out/work.$$"
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:$version"
umoci unpack --rootless --image "$work/layout:$version" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$bin/signoff" "$bin/kubectl-signoff" "$rootfs/usr/local/bin/"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
umoci repack --image "$work/layout:$version" "$work/bundle"
umoci config --image "$work/layout:$version" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/signoff --config.cmd run \
  --config.exposedports 9443/tcp --config.exposedports 8080/tcp \
  --config.label "org.opencontainers.image.title=signoff" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.source=https://github.com/signoff-dev/signoff"
umoci gc --layout "$work/layout"
archive="$out/signoff-$version.oci.tar"
tar -C "$work/layout" -cf "$archive.tmp" . && mv "$archive.tmp" "$archive"
echo "image: signoff:$version, $(du -h "$archive" | cut -f1) in $archive" >&2
echo "$archive"
