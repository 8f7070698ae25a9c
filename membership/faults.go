package membership

import (
	"net"
	"time"

	"github.com/troupe-go/troupe/internal/faultnet"
)

// Network stands between a node and the real network in tests: it can
// lose, delay and cut the node's traffic, so that a test can partition an
// in-process cluster on loopback. Give every node of the test cluster the
// same one in Config.Faults. troupetest.Network implements it; leave
// Config.Faults nil in production.
//
// A node consults it for all of its traffic: memberlist's gossip packets
// and state exchange streams, the transport behind Channel.Call and
// Channel.Send, and received multicast announcements. Addresses are
// "ip:port" (or "ip"); an implementation should tell hosts apart by IP,
// since one node uses several ports. Every method is called concurrently
// from many goroutines of many nodes.
type Network interface {
	// Drop reports whether traffic from one address to another is lost.
	// A node asks before it sends a packet or dials a connection (from is
	// its own address) and when it receives a packet or accepts a
	// connection (to is its own). It must not block.
	Drop(from, to string) bool

	// Latency is how long a packet from one address to another is held
	// back before it is sent; zero for none. The node sends it that much
	// later, without holding up its other traffic. Connections are slowed
	// by Track instead.
	Latency(from, to string) time.Duration

	// Track is given every connection the node dials or accepts, before
	// the first byte goes over it, and returns the connection the node
	// uses instead: typically a wrapper that closes it when a cut
	// separates local from remote, or holds back its writes. It may
	// return c itself. When the returned connection implements
	// syscall.Conn, as *net.TCPConn does, the node may write to its
	// socket directly, so a wrapper that holds back writes must hold back
	// its RawConn's writes too (troupetest.Network's does).
	Track(c net.Conn, local, remote string) net.Conn
}

// A Network is what the internal transports call.
var _ faultnet.Hook = Network(nil)
