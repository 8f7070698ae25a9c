//go:build !unix

package transport

import "syscall"

// peerClosed cannot peek here: a peer's close of an idle connection is
// noticed by the next call, which fails.
func peerClosed(syscall.RawConn) bool { return false }
