#!/usr/bin/env bash
# Builds the image the compose cluster runs, from a meseta binary built on
# this host: no registry, no base image. The root filesystem is the binary
# (debug info stripped), the shared libraries it links (as ldd lists them),
# Debian's busybox-static for the shell tasks run in, and an entrypoint that
# makes the container's cgroup hierarchies writable for an agent.
#
#   deploy/compose/build-image.sh [--binary PATH] [--tag meseta:local]
#
# Default binary: ($CARGO_TARGET_DIR or target/)/release/meseta.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
binary="${CARGO_TARGET_DIR:-$root/target}/release/meseta"
tag="meseta:local"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--tag TAG]" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "no meseta binary at $binary (cargo build --release -p meseta)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/meseta-image.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
install -d "$rootfs"/{bin,usr/bin,etc,root,var/lib/meseta} -m 0755
install -d -m 1777 "$rootfs/tmp"
objcopy --strip-debug --strip-unneeded "$binary" "$rootfs/usr/bin/meseta"
# The libraries and the loader, at the paths the binary asks for.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
install -m 0755 /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
printf 'NAME="meseta"\nID=meseta\n' > "$rootfs/etc/os-release"
cat > "$rootfs/bin/meseta-entrypoint" <<'SH'
#!/bin/sh
# Docker mounts the cgroup hierarchies read-only; an agent needs them
# writable (MESETA_CGROUPS_RW=1, with CAP_SYS_ADMIN). The mounts are rooted at
# the container's own cgroup, so task cgroups nest under it and go with it.
if [ "${MESETA_CGROUPS_RW:-0}" = 1 ]; then
  for d in /sys/fs/cgroup /sys/fs/cgroup/*/; do
    [ -L "${d%/}" ] && continue
    mount -o remount,bind,rw "$d" 2>/dev/null || true
  done
fi
exec /usr/bin/meseta "$@"
SH
chmod 0755 "$rootfs/bin/meseta-entrypoint"

tar -C "$rootfs" -c . | docker import \
  -c 'ENTRYPOINT ["/bin/meseta-entrypoint"]' \
  -c 'ENV PATH=/usr/bin:/bin' \
  -c 'WORKDIR /var/lib/meseta' \
  -c 'EXPOSE 5050 5051 8080' \
  - "$tag" >/dev/null
echo "$tag"
