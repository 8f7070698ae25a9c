//go:build !unix

package transport

import (
	"errors"
	"syscall"
)

// directWrites is off: every frame goes through the writer goroutine.
const directWrites = false

func writeFD(uintptr, []byte) (int, error) { return 0, errors.ErrUnsupported }

// peerClosed cannot peek here: a peer's close of an idle connection is
// noticed by the next call, which fails.
func peerClosed(syscall.RawConn) bool { return false }
