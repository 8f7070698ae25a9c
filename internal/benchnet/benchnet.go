// Package benchnet holds what Troupe's benchmarks measure themselves
// against: the round-trip floor, a ping-pong of a 1 KiB request and a
// 16-byte answer on one persistent TCP connection over loopback, with no
// framing, encoding or goroutine hand-offs; and the latency percentiles
// they report. The transport and replication benchmarks, benchsave and
// the Redis comparison all use it, so that every figure is set against
// the same floor.
//
//	p, err := benchnet.StartPingPong()
//	if err != nil {
//		return err
//	}
//	defer p.Close()
//	for range n {
//		if err := p.RoundTrip(); err != nil {
//			return err
//		}
//	}
package benchnet

import (
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// The floor's message sizes.
const (
	RequestSize = 1 << 10
	AnswerSize  = 16
)

// PingPong is a client connected to an echo server of fixed-size answers
// on loopback. It is not safe for concurrent use.
type PingPong struct {
	ln        net.Listener
	conn      net.Conn
	wg        sync.WaitGroup
	req       []byte
	answer    []byte
	closeOnce sync.Once
}

// StartPingPong starts the server and connects to it.
func StartPingPong() (*PingPong, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &PingPong{ln: ln, req: make([]byte, RequestSize), answer: make([]byte, AnswerSize)}
	p.wg.Go(func() { serve(ln) })
	p.conn, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		p.wg.Wait()
		return nil, err
	}
	return p, nil
}

// serve answers the one connection it accepts until it closes.
func serve(ln net.Listener) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	req, answer := make([]byte, RequestSize), make([]byte, AnswerSize)
	for {
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		if _, err := c.Write(answer); err != nil {
			return
		}
	}
}

// RoundTrip sends one request and reads its answer.
func (p *PingPong) RoundTrip() error {
	if _, err := p.conn.Write(p.req); err != nil {
		return err
	}
	_, err := io.ReadFull(p.conn, p.answer)
	return err
}

// Run makes round trips for d and returns the latency of each.
func (p *PingPong) Run(d time.Duration) ([]time.Duration, error) {
	var lat []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); {
		t0 := time.Now()
		if err := p.RoundTrip(); err != nil {
			return lat, err
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// Close closes the connection and the server, and waits for the server
// to return. Calling it again returns nil.
func (p *PingPong) Close() error {
	var err error
	p.closeOnce.Do(func() {
		err = errors.Join(p.conn.Close(), p.ln.Close())
		p.wg.Wait()
	})
	return err
}

// Percentile returns the p-th percentile (0 to 100) of lat, or 0 if lat
// is empty. It sorts lat in place.
func Percentile(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[min(len(lat)-1, len(lat)*p/100)]
}

// Micros is d in microseconds, for printing.
func Micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
