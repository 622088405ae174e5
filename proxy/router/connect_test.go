package router

import (
	"strings"
	"testing"
)

func TestConnectUpgradeConfigs(t *testing.T) {
	wrap := func(route string) string {
		return "virtual_hosts:\n- name: v\n  domains: [\"*\"]\n  routes: [{match: {connect_matcher: {}}, route: {cluster: c, " + route + "}}]\n"
	}
	tests := []struct {
		name, route string
		terminates  bool
		err         string
	}{
		{"connect_config terminates", `upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]`, true, ""},
		{"case-insensitive type", `upgrade_configs: [{upgrade_type: connect, connect_config: {}}]`, true, ""},
		{"no connect_config forwards", `upgrade_configs: [{upgrade_type: CONNECT}]`, false, ""},
		{"disabled", `upgrade_configs: [{upgrade_type: CONNECT, enabled: false, connect_config: {}}]`, false, ""},
		{"no upgrade config", ``, false, ""},
		{"allow_post refused", `upgrade_configs: [{upgrade_type: CONNECT, connect_config: {allow_post: true}}]`, false,
			"upgrade_configs[0].connect_config.allow_post: not supported"},
		{"proxy_protocol_config refused", `upgrade_configs: [{upgrade_type: CONNECT, connect_config: {proxy_protocol_config: {}}}]`, false,
			"upgrade_configs[0].connect_config.proxy_protocol_config: not supported"},
		{"connect_config on websocket", `upgrade_configs: [{upgrade_type: websocket, connect_config: {}}]`, false,
			"upgrade_configs[0].connect_config: only valid for upgrade_type CONNECT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := Compile(parseRC(t, wrap(tt.route)), Options{})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, _ := tab.Select(req("CONNECT example.com:443"), 0)
			if r == nil {
				t.Fatal("the CONNECT did not match the connect_matcher route")
			}
			if r.TerminatesConnect() != tt.terminates {
				t.Fatalf("TerminatesConnect %v, want %v", r.TerminatesConnect(), tt.terminates)
			}
		})
	}
}
