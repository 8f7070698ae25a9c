// Package faultnet injects network partitions into Troupe's own transports,
// so that tests can cut a cluster in two on loopback without root, netem or
// namespaces.
//
// A Network is a shared switchboard: every transport of every in-process
// node asks it whether traffic between two hosts may pass. Hosts are
// identified by IP address (each test node gets its own 127.0.0.x), so one
// partition cuts memberlist's UDP and TCP traffic, the node-to-node
// transport and multicast announcements alike.
//
//	net := faultnet.New()
//	// give net to every node's config, then:
//	net.Partition([]string{"127.0.0.1", "127.0.0.2"}, []string{"127.0.0.3"})
//	// ... each side declares the other failed ...
//	net.Heal()
//
// Cutting closes the live connections that cross the cut, as a reset would,
// and refuses new ones; packets across the cut are dropped and counted.
// A nil *Network lets everything through, so production code calls it
// unconditionally.
package faultnet

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// ErrPartitioned is what transports report for a dial that would cross a
// cut (see Drop).
var ErrPartitioned = errors.New("faultnet: hosts are partitioned")

// Network holds the current cuts between hosts. It is safe for concurrent
// use. The zero value is not usable; call New.
type Network struct {
	dropped atomic.Uint64

	mu struct {
		sync.Mutex
		side  map[string]int // host -> partition side; hosts not listed reach everyone
		cut   map[[2]string]bool
		conns map[*Conn]struct{}
	}
}

// New returns a Network with no cuts.
func New() *Network {
	n := &Network{}
	n.mu.side = map[string]int{}
	n.mu.cut = map[[2]string]bool{}
	n.mu.conns = map[*Conn]struct{}{}
	return n
}

// Partition splits the listed hosts into sides that cannot reach each
// other. Hosts on the same side, and hosts not listed, are unaffected. It
// replaces any earlier partition (but not Block cuts).
func (n *Network) Partition(sides ...[]string) {
	n.mu.Lock()
	n.mu.side = map[string]int{}
	for i, hosts := range sides {
		for _, h := range hosts {
			n.mu.side[hostOf(h)] = i + 1
		}
	}
	victims := n.crossingLocked()
	n.mu.Unlock()
	closeAll(victims)
}

// Block cuts traffic between a and b in both directions.
func (n *Network) Block(a, b string) {
	a, b = hostOf(a), hostOf(b)
	n.mu.Lock()
	n.mu.cut[[2]string{a, b}] = true
	n.mu.cut[[2]string{b, a}] = true
	victims := n.crossingLocked()
	n.mu.Unlock()
	closeAll(victims)
}

// Heal removes every cut.
func (n *Network) Heal() {
	n.mu.Lock()
	n.mu.side = map[string]int{}
	n.mu.cut = map[[2]string]bool{}
	n.mu.Unlock()
}

// Allowed reports whether traffic from one address to another may pass.
// Addresses may be "host" or "host:port". A nil Network allows everything.
func (n *Network) Allowed(from, to string) bool {
	if n == nil {
		return true
	}
	from, to = hostOf(from), hostOf(to)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.allowedLocked(from, to)
}

// Drop records a packet that was dropped because of a cut and reports
// whether it must be dropped. It is the one-call form of Allowed for packet
// paths.
func (n *Network) Drop(from, to string) bool {
	if n.Allowed(from, to) {
		return false
	}
	n.dropped.Add(1)
	return true
}

// Dropped returns how many packets and connections were refused so far.
func (n *Network) Dropped() uint64 {
	if n == nil {
		return 0
	}
	return n.dropped.Load()
}

func (n *Network) allowedLocked(from, to string) bool {
	if from == to {
		return true
	}
	if n.mu.cut[[2]string{from, to}] {
		return false
	}
	a, b := n.mu.side[from], n.mu.side[to]
	return a == 0 || b == 0 || a == b
}

func (n *Network) crossingLocked() []*Conn {
	var out []*Conn
	for c := range n.mu.conns {
		if !n.allowedLocked(c.local, c.remote) {
			out = append(out, c)
			delete(n.mu.conns, c)
		}
	}
	return out
}

func closeAll(conns []*Conn) {
	for _, c := range conns {
		_ = c.Conn.Close()
	}
}

// Track wraps an established connection so that it is closed when a cut
// separates local from remote. If they are already separated, the
// connection is closed at once. With a nil Network, c is returned as is.
func (n *Network) Track(c net.Conn, local, remote string) net.Conn {
	if n == nil {
		return c
	}
	tc := &Conn{Conn: c, net: n, local: hostOf(local), remote: hostOf(remote)}
	n.mu.Lock()
	if !n.allowedLocked(tc.local, tc.remote) {
		n.mu.Unlock()
		n.dropped.Add(1)
		_ = c.Close()
		return tc
	}
	n.mu.conns[tc] = struct{}{}
	n.mu.Unlock()
	return tc
}

// Conn is a connection tracked by a Network.
type Conn struct {
	net.Conn
	net           *Network
	local, remote string
}

// Close closes the connection and forgets it.
func (c *Conn) Close() error {
	c.net.mu.Lock()
	delete(c.net.mu.conns, c)
	c.net.mu.Unlock()
	return c.Conn.Close()
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
