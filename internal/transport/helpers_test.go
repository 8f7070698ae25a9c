package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTransport starts a transport on 127.0.0.1 with short timings and a
// logger that writes to the test's output, and shuts it down at cleanup.
// opts change the config before New.
func newTransport(tb testing.TB, h Handler, opts ...func(*Config)) *Transport {
	tb.Helper()
	cfg := Config{
		BindAddr:    "127.0.0.1:0",
		DialTimeout: 2 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := New(context.Background(), cfg, h)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = tr.Shutdown() })
	return tr
}

// echo answers with the request body, or fails for method "fail".
var echo = HandlerFunc(func(_ context.Context, _, method string, body []byte) ([]byte, error) {
	if method == "fail" {
		return nil, errFromHandler
	}
	return body, nil
})

// peerConn returns the open dialled connection to addr, or nil.
func (t *Transport) peerConn(addr string) *conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.peers[addr]
}

// inlineFunc is an InlineHandler whose TryServeRequest is the function;
// ServeRequest, for the requests it declines, echoes.
type inlineFunc func(method string, body []byte) ([]byte, bool, error)

func (f inlineFunc) ServeRequest(ctx context.Context, from, method string, body []byte) ([]byte, error) {
	return echo(ctx, from, method, body)
}

func (f inlineFunc) TryServeRequest(_ context.Context, _, method string, body []byte) ([]byte, bool, error) {
	return f(method, body)
}

var errFromHandler = &handlerError{"the handler says no"}

type handlerError struct{ msg string }

func (e *handlerError) Error() string { return e.msg }

func withKeys(keys ...[]byte) func(*Config) {
	return func(c *Config) { c.Keys = keys }
}

func withTLS(cfg *tls.Config) func(*Config) {
	return func(c *Config) { c.TLS = cfg }
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// rawPeer dials addr with a plain TCP connection and, unless hello is
// nil, sends it and reads the server's hello. It is closed at cleanup.
func rawPeer(tb testing.TB, addr string, h *hello) (net.Conn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = c.Close() })
	require.NoError(tb, c.SetDeadline(time.Now().Add(10*time.Second)))
	br := bufio.NewReader(c)
	if h != nil {
		b := h.marshal()
		_, err = c.Write(b[:])
		require.NoError(tb, err)
		_, _, err = readHello(br)
		require.NoError(tb, err)
	}
	return c, br
}

func plainHello() *hello {
	return &hello{version: protocolVersion, mode: modePlain, maxFrame: DefaultMaxFrameSize}
}

// encodeFrame returns f as a plaintext frame on the wire.
func encodeFrame(f frame) []byte {
	b := appendFrame(nil, f)
	binary.BigEndian.PutUint32(b, uint32(len(b)-lengthSize))
	return b
}

// recordingProxy forwards TCP connections to target and records the bytes
// that pass in each direction.
type recordingProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	toServer bytes.Buffer
	toClient bytes.Buffer
	conns    []net.Conn
}

func newRecordingProxy(tb testing.TB, target string) *recordingProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	p := &recordingProxy{ln: ln, target: target}
	p.wg.Go(p.acceptLoop)
	tb.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *recordingProxy) acceptLoop() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn, rec *bytes.Buffer) {
			_, _ = io.Copy(dst, io.TeeReader(src, lockedWriter{&p.mu, rec}))
			_ = dst.Close()
			_ = src.Close()
		}
		p.wg.Go(func() { pipe(server, client, &p.toServer) })
		p.wg.Go(func() { pipe(client, server, &p.toClient) })
	}
}

// recorded returns copies of what went to the server and to the client.
func (p *recordingProxy) recorded() (toServer, toClient []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.toServer.Bytes()), bytes.Clone(p.toClient.Bytes())
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}
