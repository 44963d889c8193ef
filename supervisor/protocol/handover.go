package protocol

// The master-to-master protocol of a USR2 upgrade, and systemd's socket
// activation, which hand listening sockets to a new master from fd 3 on.
const (
	// FDPassedStart is the first passed socket, for systemd (LISTEN_FDS)
	// and for an upgrading master alike.
	FDPassedStart = 3

	// EnvUpgradeFDs tells a new master how many sockets its predecessor
	// passed. The first EnvUpgradePrimary of them are the server's
	// addresses, in bind order; the rest are the other worker slots'
	// reuse-port sockets.
	EnvUpgradeFDs     = "MCPGATEWAY_UPGRADE_FDS"
	EnvUpgradePrimary = "MCPGATEWAY_UPGRADE_PRIMARY"

	// EnvUpgradeActivated is "1" when the primary sockets came from systemd:
	// the new master adopts them as they are, whatever it is configured to
	// bind, and never unlinks or shuts them down.
	EnvUpgradeActivated = "MCPGATEWAY_UPGRADE_ACTIVATED"

	// EnvOldMaster is the pid of the master that started this one by USR2.
	// Until that master is gone, the new one is not the service's main
	// process: it tells systemd nothing before it is ready, and it never
	// unlinks a unix socket file that the old master still serves on.
	EnvOldMaster = "MCPGATEWAY_OLD_MASTER"
)

// EnvUpgradeControl is "1" when the old master also passed its control
// socket: it is the fd right after the EnvUpgradeFDs listening sockets.
const EnvUpgradeControl = "MCPGATEWAY_UPGRADE_CONTROL"
