#!/usr/bin/env bash
# Builds meseta_<version>_amd64.deb from a meseta binary built on this host,
# with dpkg-deb (no cargo-deb needed; see docs/architecture.md).
#
#   deploy/deb/build.sh [--binary PATH] [--out DIR]
#
# Defaults: the release binary ($CARGO_TARGET_DIR or target/)/release/meseta,
# and ($CARGO_TARGET_DIR or target/)/debian/. Prints the path of the .deb.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
binary="$target/release/meseta"
out="$target/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "no meseta binary at $binary (cargo build --release -p meseta)" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
[ -n "$version" ] || { echo "no version in $root/Cargo.toml" >&2; exit 1; }
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d "${TMPDIR:-/tmp}/meseta-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/pkg"

install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" \
  "$pkg/etc/meseta" "$pkg/etc/default" "$pkg/usr/share/doc/meseta" \
  "$pkg/usr/share/meseta/examples"
# The binary carries line tables for backtraces; the package does not.
objcopy --strip-debug --strip-unneeded "$binary" "$pkg/usr/bin/meseta"
chmod 0755 "$pkg/usr/bin/meseta"
install -m 0644 "$root"/deploy/systemd/*.service "$pkg/lib/systemd/system/"
install -m 0644 "$root/deploy/config/00-defaults.toml" "$pkg/etc/meseta/00-defaults.toml"
install -m 0644 "$root/deploy/config/meseta.default" "$pkg/etc/default/meseta"
install -m 0644 "$root/README.md" "$pkg/usr/share/doc/meseta/README.md"
install -m 0644 "$root"/examples/apps/*.json "$pkg/usr/share/meseta/examples/"
cat > "$pkg/usr/share/doc/meseta/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: meseta
Source: https://github.com/meseta/meseta

Files: *
Copyright: 2026 the meseta authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be
 found in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
printf 'meseta (%s) unstable; urgency=medium\n\n  * Built from the meseta workspace.\n\n -- meseta developers <dev@meseta.invalid>  %s\n' \
  "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(stat -c %Y "$root/Cargo.toml")}")" \
  | gzip -9n > "$pkg/usr/share/doc/meseta/changelog.gz"
chmod 0644 "$pkg/usr/share/doc/meseta/changelog.gz"

# Shared libraries the binary links (libc6, libgcc-s1), as dpkg-shlibdeps
# says; a fixed list when dpkg-dev is not installed.
depends="libc6 (>= 2.34), libgcc-s1 (>= 4.2)"
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  mkdir -p "$stage/debian"
  printf 'Source: meseta\n\nPackage: meseta\nArchitecture: any\n' > "$stage/debian/control"
  if found="$(cd "$stage" && dpkg-shlibdeps -O pkg/usr/bin/meseta 2>/dev/null)"; then
    depends="${found#shlibs:Depends=}"
  fi
fi
installed_size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: meseta
Version: $version
Architecture: $arch
Maintainer: meseta developers <dev@meseta.invalid>
Installed-Size: $installed_size
Depends: $depends, adduser
Recommends: docker.io
Section: admin
Priority: optional
Homepage: https://github.com/meseta/meseta
Description: Mesos + Marathon in one binary
 meseta is a cluster manager in the shape of Apache Mesos and Marathon:
 replicated masters (Raft, no ZooKeeper), agents that run tasks isolated by
 namespaces and cgroups or through Docker, and a Marathon-compatible
 scheduler with its /v2 API. One binary, with systemd units for each role
 and for a single-node cluster (meseta-up).
CONTROL
printf '/etc/meseta/00-defaults.toml\n/etc/default/meseta\n' > "$pkg/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"

mkdir -p "$out"
deb="$out/meseta_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
