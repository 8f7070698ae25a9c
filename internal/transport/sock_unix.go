//go:build unix

package transport

import (
	"errors"
	"os"
	"syscall"
)

// directWrites: a frame may be written to the socket from the calling
// goroutine (see conn.writeDirect).
const directWrites = true

// writeFD is one non-blocking write(2) to a socket.
func writeFD(fd uintptr, b []byte) (int, error) { return syscall.Write(int(fd), b) }

// peerClosed peeks at a socket without blocking or consuming anything,
// and reports whether the peer closed it (end of stream) or it failed.
func peerClosed(sock syscall.RawConn) bool {
	closed := false
	err := sock.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
		case err != nil || n == 0:
			closed = true
		}
		return true // one look, never wait
	})
	// A passed read deadline fails the look before it is taken.
	return closed || err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}
