//go:build unix

package multicast

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// shareAddr lets several sockets bind the same group:port, so that nodes
// in one process or on one host each receive every announcement.
func shareAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if serr == nil {
			setReusePort(int(fd))
		}
	})
	return errors.Join(err, serr)
}

// listenHost is the address the receiving socket binds: the group itself,
// which makes the kernel deliver only that group's datagrams to it.
func listenHost(group string) string { return group }
