//go:build unix && !solaris

package multicast

import "golang.org/x/sys/unix"

// setReusePort sets SO_REUSEPORT, which BSD-derived systems require (in
// addition to SO_REUSEADDR) for two sockets to share a multicast port.
// It is best effort: Linux shares with SO_REUSEADDR alone.
func setReusePort(fd int) {
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}
