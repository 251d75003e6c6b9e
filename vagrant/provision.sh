#!/usr/bin/env bash
# Provisions the playa VM (run by `vagrant up` as root): installs meseta from
# the package built on the host (or the release binary with the units and the
# default config), Docker from Debian, this VM's config
# (/etc/meseta/50-playa.toml), and starts the master, agent, scheduler and
# DNS under systemd. Builds nothing. In a container (the docker provider)
# Docker is the host's daemon, reached through its socket, so nothing is
# installed from the network at all.
set -euo pipefail
ip="${MESETA_IP:-10.141.141.10}"
artifact="${MESETA_ARTIFACT:-/tmp/meseta.deb}"
kind="${MESETA_ARTIFACT_KIND:-deb}"
deploy=/tmp/meseta-deploy
demo=/tmp/meseta-demo
export DEBIAN_FRONTEND=noninteractive

if ! systemd-detect-virt --container --quiet; then
  echo "== Docker and python3 (the demo's frontend) from Debian"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io python3 curl ca-certificates >/dev/null
  systemctl enable --now docker
fi

[ -f "$artifact" ] || { echo "no meseta artifact at $artifact: build it on the host (deploy/deb/build.sh or cargo build --release -p meseta)" >&2; exit 1; }
if [ "$kind" = deb ]; then
  echo "== meseta from $(basename "$artifact")"
  dpkg -i "$artifact" >/dev/null
else
  echo "== meseta from the release binary"
  install -m 0755 "$artifact" /usr/bin/meseta
  install -m 0644 "$deploy"/systemd/*.service /lib/systemd/system/
  install -d /etc/meseta
  [ -f /etc/meseta/00-defaults.toml ] || install -m 0644 "$deploy/config/00-defaults.toml" /etc/meseta/00-defaults.toml
  [ -f /etc/default/meseta ] || install -m 0644 "$deploy/config/meseta.default" /etc/default/meseta
  getent passwd meseta >/dev/null || adduser --system --group --quiet --home /var/lib/meseta --no-create-home meseta
  install -d -m 0755 /var/lib/meseta /var/lib/meseta/agent
  install -d -m 0750 -o meseta -g meseta /var/lib/meseta/master
fi
meseta --version

# Upstream resolvers for names outside *.mesos: what the VM used before.
resolvers="$(awk '$1 == "nameserver" && $2 !~ /^127\./ { printf "%s\"%s\"", sep, $2; sep = ", " }' /etc/resolv.conf)"
cat > /etc/meseta/50-playa.toml <<TOML
# The playa VM: one master, one agent, the scheduler and DNS at $ip.
masters = ["$ip:5050"]

[master]
listen = "0.0.0.0:5050"
advertise = "$ip:5050"

[agent]
listen = "0.0.0.0:5051"
advertise = "$ip:5051"
hostname = "$ip"
containerizers = ["mesos", "docker"]

[scheduler]
listen = "0.0.0.0:8080"
advertise = "$ip:8080"

[dns]
listen = "0.0.0.0:53"
domain = "mesos"
resolvers = [$resolvers]
TOML

systemctl daemon-reload
# Type=notify units: `enable --now` returns once each role serves.
systemctl enable --now meseta-master.service meseta-agent.service meseta-scheduler.service
if meseta dns --help >/dev/null 2>&1; then
  systemctl enable --now meseta-dns.service
else
  echo "== meseta dns is not in this build (the DNS role is still to come); DNS is not started"
fi

echo "== demo apps in ~vagrant/demo"
home="$(getent passwd vagrant | cut -d: -f6 || true)"
if [ -n "$home" ] && [ -d "$demo" ]; then
  install -d -o vagrant -g vagrant "$home/demo"
  install -m 0644 -o vagrant -g vagrant "$demo"/* "$home/demo/"
fi

for url in "http://127.0.0.1:5050/master/state" "http://127.0.0.1:8080/v2/info"; do
  for _ in $(seq 1 60); do
    curl -fsS -m 2 -o /dev/null "$url" && break
    sleep 0.5
  done
  curl -fsS -m 2 -o /dev/null "$url" || { echo "$url does not answer" >&2; exit 1; }
done
echo "== meseta serves on $ip: master :5050, agent :5051, marathon :8080"
