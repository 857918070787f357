# node-cert-agent (%preun): on erase ($1 = 0; not on upgrade, $1 = 1), stop and
# disable both units while their files still exist, then take the agent's
# CAs off the node's trust store (`node-cert-agent uninstall`: its anchors
# removed, the trust store refreshed, containerd restarted once), since no
# agent is left to rotate or remove them. Without a running systemd (an image
# build) no unit runs and no refresh can be made: nothing is done. A failed
# clean-up is reported and never blocks the erase.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl disable --now node-cert-agent.service node-cert-agent-provision.service || :
	/usr/bin/node-cert-agent uninstall --log-target stdout ||
		echo "node-cert-agent: warning: its CAs may still be in the trust store: remove the node-cert-agent-*.pem files of the distro's anchors directory, run its refresh tool (update-ca-trust extract), then restart containerd" >&2
fi
exit 0
