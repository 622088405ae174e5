package upstream

import "syscall"

// check peeks one byte without blocking: EAGAIN means alive and quiet;
// EOF, data or any other error means the connection must not be reused.
func (pk *peeker) check(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), pk.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	pk.ok = n <= 0 && err == syscall.EAGAIN
	return true
}
