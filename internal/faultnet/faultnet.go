// Package faultnet injects network faults into Troupe's own transports,
// so that tests can cut, isolate and slow down nodes of a cluster on
// loopback without root, netem or namespaces.
//
// A Network is a shared switchboard: every transport of every in-process
// node asks it whether traffic between two hosts may pass, and how long it
// is held back. Hosts are identified by IP address (each test node gets
// its own 127.0.0.x), so one partition cuts memberlist's UDP and TCP
// traffic, the node-to-node transport and multicast announcements alike.
//
//	net := faultnet.New()
//	// give net to every node's config (as a Hook), then:
//	net.Partition([]string{"127.0.0.1", "127.0.0.2"}, []string{"127.0.0.3"})
//	// ... each side declares the other failed ...
//	net.Heal()
//
// Cutting closes the live connections that cross the cut, as a reset would,
// and refuses new ones; packets across the cut are dropped and counted.
// Delaying a pair of hosts makes every write on a tracked connection
// between them wait (direct writes to its socket too), and tells packet
// senders (Latency) to hold their packets back as long. A nil *Network
// lets everything through at once.
//
// Transports take a Hook, the method set they call, so that the public
// test kit (troupetest) and membership's exported Network interface can
// stand in for a *Network. A nil Hook means no faults; callers check.
package faultnet

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrPartitioned is what transports report for a dial that would cross a
// cut (see Drop).
var ErrPartitioned = errors.New("faultnet: hosts are partitioned")

// Hook is what a transport asks about its traffic: the method set of
// *Network, of membership.Network and of troupetest.Network. Addresses
// are "ip" or "ip:port".
type Hook interface {
	// Drop reports whether traffic from one address to another is lost,
	// and counts it if so. It never blocks.
	Drop(from, to string) bool
	// Latency is how long a packet from one address to another is held
	// back before it is sent: zero for none.
	Latency(from, to string) time.Duration
	// Track wraps a connection between local and remote, so that a later
	// cut closes it and a delay holds back its writes.
	Track(c net.Conn, local, remote string) net.Conn
}

var _ Hook = (*Network)(nil)

// Network holds the current cuts and delays between hosts. It is safe for
// concurrent use. The zero value is not usable; call New.
type Network struct {
	dropped atomic.Uint64

	mu struct {
		sync.Mutex
		side     map[string]int // host -> partition side; hosts not listed reach everyone
		cut      map[[2]string]bool
		isolated map[string]bool
		delay    map[[2]string]time.Duration
		conns    map[*Conn]struct{}
	}
}

// New returns a Network with no cuts and no delays.
func New() *Network {
	n := &Network{}
	n.mu.side = map[string]int{}
	n.mu.cut = map[[2]string]bool{}
	n.mu.isolated = map[string]bool{}
	n.mu.delay = map[[2]string]time.Duration{}
	n.mu.conns = map[*Conn]struct{}{}
	return n
}

// Partition splits the listed hosts into sides that cannot reach each
// other. Hosts on the same side, and hosts not listed, are unaffected. It
// replaces any earlier partition (but not Block or Isolate cuts).
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

// Isolate cuts host off from every other host, including hosts that are
// not listed anywhere.
func (n *Network) Isolate(host string) {
	n.mu.Lock()
	n.mu.isolated[hostOf(host)] = true
	victims := n.crossingLocked()
	n.mu.Unlock()
	closeAll(victims)
}

// Delay holds back traffic between a and b, in both directions, by d: a
// write on a tracked connection between them waits d before it goes, and
// Latency reports d to packet senders, so a request and its answer take
// at least 2d. A zero or negative d removes the delay. Delays do not
// close connections, and Partition does not remove them.
func (n *Network) Delay(a, b string, d time.Duration) {
	a, b = hostOf(a), hostOf(b)
	n.mu.Lock()
	defer n.mu.Unlock()
	if d <= 0 || a == b {
		delete(n.mu.delay, [2]string{a, b})
		delete(n.mu.delay, [2]string{b, a})
		return
	}
	n.mu.delay[[2]string{a, b}] = d
	n.mu.delay[[2]string{b, a}] = d
}

// Heal removes every cut and every delay. Connections closed by a cut
// stay closed; new ones may be made.
func (n *Network) Heal() {
	n.mu.Lock()
	n.mu.side = map[string]int{}
	n.mu.cut = map[[2]string]bool{}
	n.mu.isolated = map[string]bool{}
	n.mu.delay = map[[2]string]time.Duration{}
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

// Latency returns the delay between two addresses set by Delay, or zero.
func (n *Network) Latency(from, to string) time.Duration {
	if n == nil {
		return 0
	}
	from, to = hostOf(from), hostOf(to)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.delay[[2]string{from, to}]
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
	if n.mu.cut[[2]string{from, to}] || n.mu.isolated[from] || n.mu.isolated[to] {
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
		_ = c.shut()
	}
}

// Track wraps an established connection so that it is closed when a cut
// separates local from remote, and so that its writes wait while the two
// are delayed. If they are already separated, the connection is closed
// at once. With a nil Network, c is returned as is.
func (n *Network) Track(c net.Conn, local, remote string) net.Conn {
	if n == nil {
		return c
	}
	tc := &Conn{Conn: c, net: n, local: hostOf(local), remote: hostOf(remote), closed: make(chan struct{})}
	n.mu.Lock()
	if !n.allowedLocked(tc.local, tc.remote) {
		n.mu.Unlock()
		n.dropped.Add(1)
		_ = tc.shut()
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
	closed        chan struct{} // closed by shut: ends a delayed Write
	once          sync.Once
}

var _ syscall.Conn = (*Conn)(nil)

// Write waits for the delay between the connection's hosts, if any, and
// then writes. A Close or a cut during the wait ends it with
// net.ErrClosed. The write deadline is checked once the wait is over.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// SyscallConn returns the socket under the connection, for a transport
// that writes to it directly: its writes wait for the delay as Write's
// do; reads and Control pass through.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("faultnet: the tracked connection is not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return rawConn{RawConn: rc, c: c}, nil
}

// wait blocks for the delay between the connection's hosts, if any. It
// returns net.ErrClosed if the connection closes meanwhile.
func (c *Conn) wait() error {
	d := c.net.Latency(c.local, c.remote)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.closed:
		return net.ErrClosed
	}
}

type rawConn struct {
	syscall.RawConn
	c *Conn
}

// Write waits for the delay, then writes.
func (r rawConn) Write(f func(fd uintptr) (done bool)) error {
	if err := r.c.wait(); err != nil {
		return err
	}
	return r.RawConn.Write(f)
}

// Close closes the connection and forgets it.
func (c *Conn) Close() error {
	c.net.mu.Lock()
	delete(c.net.mu.conns, c)
	c.net.mu.Unlock()
	return c.shut()
}

// shut closes the underlying connection and ends delayed writes.
func (c *Conn) shut() error {
	err := net.ErrClosed
	c.once.Do(func() {
		close(c.closed)
		err = c.Conn.Close()
	})
	return err
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
