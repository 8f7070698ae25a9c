package troupetest

import (
	"net"
	"time"

	"github.com/troupe-go/troupe/internal/faultnet"
	"github.com/troupe-go/troupe/membership"
)

// Network is a fault-injection network for in-process nodes: it cuts,
// isolates and delays hosts, which it tells apart by IP address. Give the
// same Network to the Faults field of every node's membership.Config
// (Start does this for the nodes of a Cluster), then break it during the
// test and Heal it.
//
// A cut closes the connections that cross it, as a reset would, refuses
// new ones and drops packets across it (counted by Dropped). A delay holds
// back every write on a connection between the pair, and every packet
// between them, by its duration. Rules combine: traffic passes when no cut
// stops it, and waits for the pair's delay.
//
// A Network is safe for concurrent use. The zero value is not usable; call
// NewNetwork.
type Network struct {
	fn *faultnet.Network
}

var _ membership.Network = (*Network)(nil)

// NewNetwork returns a Network with no cuts and no delays.
func NewNetwork() *Network {
	return &Network{fn: faultnet.New()}
}

// Partition splits the listed hosts into sides that cannot reach each
// other. Hosts on one side reach each other; hosts listed on no side reach
// everyone. It replaces the previous partition; cuts made by Cut and
// Isolate stay.
func (n *Network) Partition(sides ...[]string) { n.fn.Partition(sides...) }

// Cut cuts hosts a and b apart, in both directions.
func (n *Network) Cut(a, b string) { n.fn.Block(a, b) }

// Isolate cuts host off from every other host.
func (n *Network) Isolate(host string) { n.fn.Isolate(host) }

// Delay holds back traffic between hosts a and b, in both directions, by
// d: each write on a connection between them, and each packet, goes d
// later (so a request and its answer take at least 2d). A later Delay of
// the same pair replaces it; d <= 0 removes it.
//
// Packets are sent late without holding up the sender's other traffic;
// writes on a connection wait, so one delayed connection is slowed down
// as a whole. Multicast announcements are not delayed. When a round trip
// (2d) outlasts the failure detector's probe timeout (200 ms with
// membership.ProfileLocal), the pair's direct probes fail and the nodes
// fall back on probing each other through third nodes, or, with none,
// suspect each other, as on a slow network.
func (n *Network) Delay(a, b string, d time.Duration) { n.fn.Delay(a, b, d) }

// Heal removes every cut and every delay. Connections that a cut closed
// stay closed; nodes open new ones as they need them.
func (n *Network) Heal() { n.fn.Heal() }

// Dropped returns how many packets and connections were refused by cuts
// so far.
func (n *Network) Dropped() uint64 { return n.fn.Dropped() }

// Drop implements membership.Network: it reports (and counts) whether
// traffic from one address to another is cut. Nodes call it; tests need
// not. A nil *Network drops nothing.
func (n *Network) Drop(from, to string) bool {
	if n == nil {
		return false
	}
	return n.fn.Drop(from, to)
}

// Latency implements membership.Network: the delay between two addresses
// (see Delay), or zero. A nil *Network delays nothing.
func (n *Network) Latency(from, to string) time.Duration {
	if n == nil {
		return 0
	}
	return n.fn.Latency(from, to)
}

// Track implements membership.Network: it wraps a connection between two
// addresses so that a cut closes it and a delay holds back its writes. A
// nil *Network returns c.
func (n *Network) Track(c net.Conn, local, remote string) net.Conn {
	if n == nil {
		return c
	}
	return n.fn.Track(c, local, remote)
}
