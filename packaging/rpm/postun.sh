# node-cert-agent (%postun): forget the removed (or replaced) units. On
# upgrade the running service is left alone (see docs/install.md).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
fi
exit 0
