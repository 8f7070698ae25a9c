package membership

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/troupe-go/troupe/internal/faultnet"
)

// gossipNet is memberlist's NetTransport with two changes: dials are
// cancelled when the Cluster stops (so Shutdown never waits out a TCP
// timeout against a dead peer), and, when a fault network is configured
// (Config.Faults), traffic across its cuts is dropped and its delayed
// packets are sent late, so tests can partition and slow down nodes.
type gossipNet struct {
	*memberlist.NetTransport
	ctx    context.Context
	host   string // bind IP, identifies this node to the fault network
	port   int
	faults Network // nil in production

	// later keeps delayed packets from starting a goroutine once
	// Shutdown has begun.
	later struct {
		sync.Mutex
		stopped bool
	}

	packets chan *memberlist.Packet // filtered copies when faults != nil
	streams chan net.Conn
	// stop ends forwarding; done, closed once the NetTransport's listeners
	// have exited, ends the filters. In between, the filters keep draining
	// the NetTransport's unbuffered channels so that its listeners, which
	// block on sending to them, can exit. stop also drops delayed packets.
	stop chan struct{}
	done chan struct{}
	wg   sync.WaitGroup // the filters and the delayed packets
	once sync.Once
}

var _ memberlist.NodeAwareTransport = (*gossipNet)(nil)

func newGossipNet(ctx context.Context, bind netip.AddrPort, faults Network, lg *slog.Logger) (*gossipNet, error) {
	nc := &memberlist.NetTransportConfig{
		BindAddrs: []string{bind.Addr().String()},
		BindPort:  int(bind.Port()),
		Logger:    log.New(&logBridge{log: lg}, "", 0),
	}
	// With port 0 the TCP listener picks a port and UDP must get the same
	// one, which another process may hold: retry a few times.
	tries := 1
	if bind.Port() == 0 {
		tries = 10
	}
	var nt *memberlist.NetTransport
	var err error
	for range tries {
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			break
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("membership: bind %s: %w", bind, err)
	}
	t := &gossipNet{
		NetTransport: nt,
		ctx:          ctx,
		host:         bind.Addr().String(),
		port:         nt.GetAutoBindPort(),
		faults:       faults,
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	if faults != nil {
		t.packets = make(chan *memberlist.Packet)
		t.streams = make(chan net.Conn)
		t.wg.Add(2)
		go t.filterPackets()
		go t.filterStreams()
	}
	return t, nil
}

func (t *gossipNet) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *gossipNet) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.faults != nil {
		if t.faults.Drop(t.host, a.Addr) {
			return time.Now(), nil // a cut loses packets silently, like a real one
		}
		if d := t.faults.Latency(t.host, a.Addr); d > 0 {
			t.sendLater(b, a, d)
			return time.Now().Add(d), nil
		}
	}
	return t.NetTransport.WriteToAddress(b, a)
}

// sendLater sends a copy of packet b to a after d, on a goroutine of its
// own, so that a delayed peer does not hold up packets to the others.
// Shutdown drops the packets still waiting.
func (t *gossipNet) sendLater(b []byte, a memberlist.Address, d time.Duration) {
	t.later.Lock()
	defer t.later.Unlock()
	if t.later.stopped {
		return
	}
	b = bytes.Clone(b)
	t.wg.Go(func() {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
			_, _ = t.NetTransport.WriteToAddress(b, a) // lost if it fails, like any packet
		case <-t.stop:
		}
	})
}

func (t *gossipNet) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *gossipNet) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if ip := net.ParseIP(t.host); !ip.IsUnspecified() {
		// Dial from the bound address so peers (and the fault network)
		// see the same source for our TCP streams as for our UDP packets.
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	if t.faults != nil && t.faults.Drop(t.host, a.Addr) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: faultnet.ErrPartitioned}
	}
	conn, err := d.DialContext(t.ctx, "tcp", a.Addr)
	if err != nil {
		return nil, err
	}
	if t.faults != nil {
		conn = t.faults.Track(conn, t.host, a.Addr)
	}
	return conn, nil
}

func (t *gossipNet) PacketCh() <-chan *memberlist.Packet {
	if t.faults == nil {
		return t.NetTransport.PacketCh()
	}
	return t.packets
}

func (t *gossipNet) StreamCh() <-chan net.Conn {
	if t.faults == nil {
		return t.NetTransport.StreamCh()
	}
	return t.streams
}

func (t *gossipNet) filterPackets() {
	defer t.wg.Done()
	in := t.NetTransport.PacketCh()
	for {
		select {
		case p := <-in:
			if t.faults.Drop(p.From.String(), t.host) {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.stop: // shutting down: drop
			}
		case <-t.done:
			return
		}
	}
}

func (t *gossipNet) filterStreams() {
	defer t.wg.Done()
	in := t.NetTransport.StreamCh()
	for {
		select {
		case c := <-in:
			remote := c.RemoteAddr().String()
			if t.faults.Drop(remote, t.host) {
				_ = c.Close()
				continue
			}
			select {
			case t.streams <- t.faults.Track(c, t.host, remote):
			case <-t.stop:
				_ = c.Close()
			}
		case <-t.done:
			return
		}
	}
}

func (t *gossipNet) Shutdown() error {
	var err error
	t.once.Do(func() {
		t.later.Lock()
		t.later.stopped = true
		t.later.Unlock()
		close(t.stop)
		err = t.NetTransport.Shutdown()
		close(t.done)
		t.wg.Wait()
	})
	return err
}
