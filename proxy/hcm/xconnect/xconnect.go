// Package xconnect turns on golang.org/x/net/http2's server support for
// extended CONNECT (RFC 8441, SETTINGS_ENABLE_CONNECT_PROTOCOL), which x/net
// reads once, from GODEBUG=http2xconnect=1, in its own init; tests that run
// x/net's server as a peer import it (outrider's own codec needs none of
// this). Importing this package (for its side effect) sets that GODEBUG
// entry before x/net's init runs: the Go spec initializes, at each step,
// the first package by import path whose imports are initialized, and this
// package imports only os and strings while its path ("github.com/...")
// sorts before "golang.org/...".
package xconnect

import (
	"os"
	"strings"
)

// Setting is the GODEBUG entry x/net's http2 package looks for.
const Setting = "http2xconnect=1"

func init() {
	v := os.Getenv("GODEBUG")
	if strings.Contains(v, "http2xconnect=") {
		return // set explicitly, either way: leave it
	}
	if v != "" {
		v += ","
	}
	_ = os.Setenv("GODEBUG", v+Setting)
}
