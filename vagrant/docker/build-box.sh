#!/usr/bin/env bash
# Builds the local Docker image that stands in for a Vagrant box under
# `vagrant up --provider=docker`: Debian bookworm from Debian's own packages
# (debootstrap, no registry, no base image), booting systemd as PID 1, with
# sshd and the `vagrant` user (Vagrant's well-known insecure key, replaced on
# first `vagrant up`, passwordless sudo), as a stock Debian box has them.
#
#   vagrant/docker/build-box.sh [--tag meseta-box:bookworm] [--if-missing]
#
# --if-missing: do nothing when the image exists and was built by this very
# script (its sha256 is the image's meseta.recipe label). Run it with
# --stop-signal=SIGRTMIN+3 (systemd halts on it). Needs root,
# debootstrap and the Vagrant package (for the insecure public key).
set -euo pipefail
tag="meseta-box:bookworm"
if_missing=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --if-missing) if_missing=1; shift ;;
    *) echo "usage: $0 [--tag TAG] [--if-missing]" >&2; exit 2 ;;
  esac
done
recipe="$(sha256sum "$0" | cut -d' ' -f1)"
if [ "$if_missing" = 1 ] && [ "$(docker image inspect -f '{{index .Config.Labels "meseta.recipe"}}' "$tag" 2>/dev/null)" = "$recipe" ]; then
  exit 0
fi
mirror="${MESETA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
pubkey="${VAGRANT_INSECURE_PUBKEY:-}"
if [ -z "$pubkey" ]; then
  pubkey="$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n1 || true)"
fi
[ -f "$pubkey" ] || { echo "no Vagrant insecure public key found (install vagrant or set VAGRANT_INSECURE_PUBKEY)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/meseta-box.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase \
  --include=systemd-sysv,dbus,openssh-server,sudo,curl,ca-certificates,iproute2,procps,python3-minimal,less \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

chroot "$rootfs" useradd --create-home --shell /bin/bash --user-group vagrant
install -d -m 0700 -o 1000 -g 1000 "$rootfs/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$pubkey" "$rootfs/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > "$rootfs/etc/sudoers.d/vagrant"
chmod 0440 "$rootfs/etc/sudoers.d/vagrant"
printf 'UseDNS no\n' > "$rootfs/etc/ssh/sshd_config.d/vagrant.conf"
echo meseta > "$rootfs/etc/hostname"

# Docker mounts the cgroup hierarchies read-only; the agent needs them
# writable (inside the container's private cgroup namespace, so its task
# cgroups nest under the container's). Remount them, then boot systemd.
cat > "$rootfs/usr/local/sbin/meseta-box-init" <<'INIT'
#!/bin/sh
for d in /sys/fs/cgroup /sys/fs/cgroup/*/; do
  [ -L "${d%/}" ] && continue
  mount -o remount,bind,rw "$d" 2>/dev/null || true
done
exec /lib/systemd/systemd
INIT
chmod 0755 "$rootfs/usr/local/sbin/meseta-box-init"
# Nothing a container has to wait for at boot.
for unit in systemd-networkd-wait-online.service getty@tty1.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

tar -C "$rootfs" -c . | docker import \
  -c 'CMD ["/usr/local/sbin/meseta-box-init"]' \
  -c 'ENV container=docker' \
  -c "LABEL meseta.recipe=$recipe" \
  - "$tag" >/dev/null
echo "$tag"
