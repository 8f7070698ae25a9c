//go:build linux

package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// runChild runs the test binary with args in a new network namespace and
// returns its combined output. Failing to create the namespace returns
// ErrNoPrivilege or ErrUnsupported; a failing test returns the exit error.
func runChild(name string, args []string) (string, error) {
	cmd := exec.Command(executable(), args...)
	cmd.Env = append(os.Environ(), EnvChild+"="+name, childGORACE())
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		// A child left behind by a killed parent would keep running the
		// test; the kernel kills it instead.
		Pdeathsig: syscall.SIGKILL,
	}
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil, errors.As(err, &exitErr):
		return string(out), err
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return "", fmt.Errorf("%w: %v", ErrNoPrivilege, err)
	case errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOSYS):
		return "", fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return string(out), err
}

// childGORACE returns the GORACE setting for the child. A race-enabled
// binary sleeps a second at exit (atexit_sleep_ms=1000) so that late race
// reports are printed; the child's goroutines are gone by then (goleak
// checks that in our tests), and a second per namespace test adds up.
// Options the user set are kept.
func childGORACE() string {
	v := os.Getenv("GORACE")
	if !strings.Contains(v, "atexit_sleep_ms") {
		v = strings.TrimSpace(v + " atexit_sleep_ms=0")
	}
	return "GORACE=" + v
}

// setupLoopback prepares a fresh namespace for multicast: lo up with
// IFF_MULTICAST, and 224.0.0.0/4 routed to it so that sockets that name no
// interface send there. It first checks that lo is the only interface: the
// route must never be added to a namespace with a way out.
func setupLoopback() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" {
		names := make([]string, 0, len(ifs))
		for _, ifi := range ifs {
			names = append(names, ifi.Name)
		}
		return fmt.Errorf("%w: interfaces %v, want only lo", ErrNotIsolated, names)
	}

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for ioctl: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_MULTICAST)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS lo up,multicast: %w", err)
	}
	if err := addRoute([4]byte{224, 0, 0, 0}, 4, uint32(ifs[0].Index)); err != nil {
		return fmt.Errorf("route 224.0.0.0/4 dev lo: %w", err)
	}
	return nil
}

// addRoute adds dst/bits via interface ifindex to the main table with one
// rtnetlink RTM_NEWROUTE request, the equivalent of
// "ip route add dst/bits dev lo".
func addRoute(dst [4]byte, bits uint8, ifindex uint32) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}

	const seq = 1
	req := newRouteRequest(seq, dst, bits, ifindex)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netlink: short error message")
			}
			// An NLMSG_ERROR with error 0 is the acknowledgement.
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}

// newRouteRequest encodes nlmsghdr + rtmsg + RTA_DST + RTA_OIF.
func newRouteRequest(seq uint32, dst [4]byte, bits uint8, ifindex uint32) []byte {
	const (
		attrLen = unix.SizeofRtAttr + 4 // both attributes carry 4 bytes
		total   = unix.SizeofNlMsghdr + unix.SizeofRtMsg + 2*attrLen
	)
	b := make([]byte, 0, total)
	ne := binary.NativeEndian

	b = ne.AppendUint32(b, total)
	b = ne.AppendUint16(b, unix.RTM_NEWROUTE)
	b = ne.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0) // pid: the kernel

	b = append(b,
		unix.AF_INET,       // rtm_family
		bits,               // rtm_dst_len
		0,                  // rtm_src_len
		0,                  // rtm_tos
		unix.RT_TABLE_MAIN, // rtm_table
		unix.RTPROT_BOOT,   // rtm_protocol, as ip route add
		unix.RT_SCOPE_LINK, // rtm_scope: on-link, no gateway
		unix.RTN_UNICAST,   // rtm_type
	)
	b = ne.AppendUint32(b, 0) // rtm_flags

	b = ne.AppendUint16(b, attrLen)
	b = ne.AppendUint16(b, unix.RTA_DST)
	b = append(b, dst[:]...)

	b = ne.AppendUint16(b, attrLen)
	b = ne.AppendUint16(b, unix.RTA_OIF)
	b = ne.AppendUint32(b, ifindex)
	return b
}
