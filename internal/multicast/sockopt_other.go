//go:build !unix && !windows

package multicast

import "syscall"

// shareAddr does nothing where there are no socket options to set.
func shareAddr(string, string, syscall.RawConn) error { return nil }

func listenHost(group string) string { return group }
