//go:build linux

package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/troupe-go/troupe/internal/netns"
)

// TestNetnsLoopback checks the promise the multicast tests rely on: inside
// the namespace lo is the only interface, it is up with multicast, and a
// datagram sent to a group with no interface named reaches every socket
// bound to that group and port.
func TestNetnsLoopback(t *testing.T) {
	if !netns.Run(t) {
		return
	}

	ifs, err := net.Interfaces()
	require.NoError(t, err)
	require.Len(t, ifs, 1, "only lo may exist, so that no packet can leave: %v", ifs)
	lo := ifs[0]
	assert.Equal(t, "lo", lo.Name)
	assert.NotZero(t, lo.Flags&net.FlagUp, "lo is up")
	assert.NotZero(t, lo.Flags&net.FlagLoopback, "lo is loopback")
	assert.NotZero(t, lo.Flags&net.FlagMulticast, "lo has multicast")

	group := &net.UDPAddr{IP: net.IPv4(239, 1, 2, 3), Port: 17946}
	a := listenGroup(t, group)
	b := listenGroup(t, group)

	send, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer send.Close()
	// No IP_MULTICAST_IF: the kernel must find lo through the 224.0.0.0/4
	// route that Run added.
	_, err = send.WriteTo([]byte("hello"), group)
	require.NoError(t, err)

	for i, c := range []net.PacketConn{a, b} {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		buf := make([]byte, 64)
		n, from, err := c.ReadFrom(buf)
		require.NoError(t, err, "socket %d", i)
		assert.Equal(t, "hello", string(buf[:n]), "socket %d", i)
		assert.True(t, from.(*net.UDPAddr).IP.IsLoopback(), "from %v", from)

		// Record how many copies one send produces, since the multicast
		// package's replay counters depend on it: exactly one.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		_, _, err = c.ReadFrom(buf)
		var ne net.Error
		assert.True(t, errors.As(err, &ne) && ne.Timeout(), "socket %d: second copy of one datagram: %v", i, err)
	}
}

// listenGroup binds group:port with SO_REUSEADDR and joins the group on the
// interface the kernel picks by route.
func listenGroup(t *testing.T, group *net.UDPAddr) net.PacketConn {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
		return errors.Join(err, serr)
	}}
	c, err := lc.ListenPacket(context.Background(), "udp4", group.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	p := ipv4.NewPacketConn(c)
	require.NoError(t, p.JoinGroup(nil, group))
	return c
}

// TestNetnsRefusesSubtests checks that Run says why it cannot run a subtest
// rather than re-running the wrong test.
func TestNetnsRefusesSubtests(t *testing.T) {
	if os.Getenv(netns.EnvChild) != "" {
		t.Skip("not in the child")
	}
	// A subtest that fails marks the parent failed too, so the subtest
	// runs in a child process of its own and the verdict is read from
	// there.
	if os.Getenv("NETNS_SUBTEST_PROBE") == "1" {
		t.Run("sub", func(t *testing.T) { netns.Run(t) })
		return
	}
	out, err := selfCommand(t, "^TestNetnsRefusesSubtests$", "NETNS_SUBTEST_PROBE=1").CombinedOutput()
	require.Error(t, err, "%s", out)
	assert.Contains(t, string(out), "must be called from a top-level test")
}

// TestNetnsWithoutPrivilege runs TestNetnsLoopback as an unprivileged user
// (nobody): it must skip and say why, or fail with the same message when
// CI=true.
func TestNetnsWithoutPrivilege(t *testing.T) {
	if os.Getenv(netns.EnvChild) != "" {
		t.Skip("not in the child")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux to drop privilege to nobody")
	}

	// go test builds the binary in a directory that only root can enter,
	// so nobody runs a copy.
	dir, err := os.MkdirTemp("", "netns-unpriv-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	exe := filepath.Join(dir, "netns.test")
	copyFile(t, exe)

	run := func(ci string) (string, error) {
		cmd := exec.Command(exe, "-test.run=^TestNetnsLoopback$", "-test.v", "-test.count=1")
		cmd.Dir = dir
		cmd.Env = append(withoutCI(os.Environ()), "CI="+ci)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("false")
	require.NoError(t, err, "%s", out)
	assert.Contains(t, out, "--- SKIP: TestNetnsLoopback")
	assert.Contains(t, out, "needs root or CAP_SYS_ADMIN")

	out, err = run("true")
	require.Error(t, err, "%s", out)
	assert.Contains(t, out, "--- FAIL: TestNetnsLoopback")
	assert.Contains(t, out, "needs root or CAP_SYS_ADMIN")
	assert.Contains(t, out, "CI=true")
}

func selfCommand(t *testing.T, run string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run="+run, "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

func copyFile(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	require.NoError(t, err)
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, errors.Join(err, out.Close()))
}

func withoutCI(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CI=") {
			out = append(out, kv)
		}
	}
	return out
}
