#!/usr/bin/env bash
# Installs the meseta binary and its systemd units, then starts a master, an
# agent and the scheduler on 10.141.141.10.
set -euo pipefail
install -m 0755 /tmp/meseta /usr/local/bin/meseta
install -m 0644 /tmp/meseta-deploy/meseta.default /etc/default/meseta
install -m 0644 /tmp/meseta-deploy/systemd/*.service /etc/systemd/system/
mkdir -p /var/lib/meseta
systemctl daemon-reload
systemctl enable --now meseta-master meseta-agent meseta-scheduler
