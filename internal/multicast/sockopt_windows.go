//go:build windows

package multicast

import (
	"errors"
	"syscall"
)

// shareAddr lets several sockets bind the same port.
func shareAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	return errors.Join(err, serr)
}

// listenHost is the wildcard address: Windows cannot bind a socket to a
// multicast address. Membership of the group still selects the datagrams.
func listenHost(string) string { return "0.0.0.0" }
