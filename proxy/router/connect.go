package router

import "strings"

// TerminatesConnect reports whether the route terminates CONNECT requests:
// its upgrade_configs has an enabled CONNECT entry with connect_config. The
// router filter then answers 200 itself and proxies the stream's bytes to
// the cluster as raw TCP; otherwise a CONNECT is forwarded upstream as is.
func (r *Route) TerminatesConnect() bool {
	for _, u := range r.UpgradeConfigs() {
		if strings.EqualFold(u.GetUpgradeType(), "CONNECT") {
			return u.GetConnectConfig() != nil && (u.GetEnabled() == nil || u.GetEnabled().GetValue())
		}
	}
	return false
}
