package transport

import (
	"context"
	"log/slog"
	"runtime"
	"testing"

	"github.com/troupe-go/troupe/internal/benchnet"
	"github.com/troupe-go/troupe/internal/testcerts"
)

// The benchmarks send a 1 KiB request and get a 16-byte answer, on one
// persistent connection over loopback: the exchange of the floor.
const (
	benchRequestSize = benchnet.RequestSize
	benchAnswerSize  = benchnet.AnswerSize
)

// BenchmarkPingPongRawTCP is the floor: the same exchange on a bare TCP
// connection, without framing, multiplexing or goroutine hand-offs.
func BenchmarkPingPongRawTCP(b *testing.B) {
	p, err := benchnet.StartPingPong()
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	b.ReportAllocs()
	b.SetBytes(benchRequestSize)
	for b.Loop() {
		if err := p.RoundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCall(b *testing.B) { benchCall(b, benchModes(b), false) }

// BenchmarkCallInline is BenchmarkCall with a handler that serves the
// request on the connection's reader goroutine (InlineHandler), as the
// session replication's does for its changes.
func BenchmarkCallInline(b *testing.B) { benchCall(b, benchModes(b)[:2], true) }

func benchCall(b *testing.B, modes []benchMode, inline bool) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			addr, cli := benchPairInline(b, m.opts, inline)
			req := make([]byte, benchRequestSize)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(benchRequestSize)
			for b.Loop() {
				if _, err := cli.Call(ctx, addr, "bench", req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCallParallel runs 64 callers at once on the one connection,
// which is where coalesced writes pay.
func BenchmarkCallParallel(b *testing.B) {
	for _, m := range benchModes(b) {
		b.Run(m.name, func(b *testing.B) {
			addr, cli := benchPair(b, m.opts)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(benchRequestSize)
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				req := make([]byte, benchRequestSize)
				for pb.Next() {
					if _, err := cli.Call(ctx, addr, "bench", req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

type benchMode struct {
	name string
	opts func(*Config)
}

func benchModes(b *testing.B) []benchMode {
	ca := testcerts.NewCA(b)
	return []benchMode{
		{"plain", func(*Config) {}},
		{"key", withKeys(key(1))},
		{"tls", func(c *Config) { c.TLS = ca.TLSConfig(b) }},
	}
}

// benchPair starts a server answering 16 bytes and a client already
// connected to it, and returns the server's address and the client.
func benchPair(b *testing.B, opts func(*Config)) (string, *Transport) {
	return benchPairInline(b, opts, false)
}

// benchPairInline is benchPair with a choice of handler: with inline, one
// that serves every request on the reader goroutine.
func benchPairInline(b *testing.B, opts func(*Config), inline bool) (string, *Transport) {
	quiet := func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) }
	answer := make([]byte, benchAnswerSize)
	var h Handler = HandlerFunc(func(context.Context, string, string, []byte) ([]byte, error) {
		return answer, nil
	})
	if inline {
		h = inlineFunc(func(string, []byte) ([]byte, bool, error) { return answer, true, nil })
	}
	srv := newTransport(b, h, quiet, opts)
	cli := newTransport(b, echo, quiet, opts)
	if _, err := cli.Call(context.Background(), srv.Addr(), "warm up", nil); err != nil {
		b.Fatal(err)
	}
	return srv.Addr(), cli
}
