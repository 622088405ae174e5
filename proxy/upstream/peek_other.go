//go:build !linux

package upstream

// check cannot peek portably; the connection is assumed alive and a dead
// one is detected on first use.
func (pk *peeker) check(uintptr) bool {
	pk.ok = true
	return true
}
