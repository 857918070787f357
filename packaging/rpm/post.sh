# node-cert-agent (%post): make systemd see the (new) units. Nothing is
# enabled or started: edit /etc/node-cert-agent/config.yaml, then
# `systemctl enable --now node-cert-agent.service`. Without a running systemd
# (an image build) there is nothing to tell.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
fi
exit 0
