package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/testcerts"
)

// TestCallersShareTheReadSide: many callers on one connection, large
// answers that take many reads, and deadlines that end some callers while
// they are reading for the others, mid-frame. Every answer reaches its
// own caller, every failure is the caller's deadline, and the connection
// survives it all, in each security mode.
func TestCallersShareTheReadSide(t *testing.T) {
	ca := testcerts.NewCA(t)
	modes := []struct {
		name string
		opts func(*Config)
	}{
		{"plain", func(*Config) {}},
		{"key", withKeys(key(1))},
		{"tls", withTLS(ca.TLSConfig(t))},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			srv := newTransport(t, echo, m.opts)
			cli := newTransport(t, echo, m.opts)
			ctx := testCtx(t)

			const callers, calls = 16, 20
			var ok, late atomic.Int64
			errs := make(chan error, callers)
			var wg sync.WaitGroup
			for i := range callers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(i), 1))
					for j := range calls {
						want := bytes.Repeat(fmt.Appendf(nil, "%d/%d.", i, j), 1+rng.IntN(16<<10))
						cctx, cancel := ctx, context.CancelFunc(func() {})
						if i%2 == 1 { // half the callers have deadlines that often end mid-read
							cctx, cancel = context.WithTimeout(ctx, time.Duration(50+rng.IntN(2000))*time.Microsecond)
						}
						got, err := cli.Call(cctx, srv.Addr(), "echo", want)
						cancel()
						switch {
						case err == nil && !bytes.Equal(got, want):
							errs <- fmt.Errorf("caller %d call %d: got %d bytes, not its own answer", i, j, len(got))
							return
						case err == nil:
							ok.Add(1)
						case i%2 == 1 && errors.Is(err, context.DeadlineExceeded):
							late.Add(1)
						default:
							errs <- fmt.Errorf("caller %d call %d: %w", i, j, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			require.GreaterOrEqual(t, ok.Load(), int64(callers/2*calls), "every call without a deadline succeeded")
			require.Positive(t, late.Load(), "some deadlines ended calls")

			got, err := cli.Call(ctx, srv.Addr(), "echo", []byte("after"))
			require.NoError(t, err)
			require.Equal(t, "after", string(got))
			st := cli.Stats()
			require.Equal(t, uint64(1), st.Dials, "interrupted reads did not break the connection")
			require.Zero(t, st.BadFrames)
		})
	}
}

// TestPeerCloseOfAnIdleConnectionIsNoticed: nobody reads a dialled
// connection between calls, yet a call after the peer restarted does not
// fail on the dead connection: it sees the close and dials again. Without
// any call, the janitor notices too.
func TestPeerCloseOfAnIdleConnectionIsNoticed(t *testing.T) {
	srv := newTransport(t, echo)
	addr := srv.Addr()
	cli := newTransport(t, echo)
	ctx := testCtx(t)

	_, err := cli.Call(ctx, addr, "echo", nil)
	require.NoError(t, err)
	require.NoError(t, srv.Shutdown())
	newTransport(t, echo, func(c *Config) { c.BindAddr = addr })
	c := cli.peerConn(addr)
	require.NotNil(t, c)
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return cli.since()-c.mu.lastCall > int64(quietAfter)
	}, 5*time.Second, time.Millisecond, "the connection has gone without a call long enough to be looked at")

	resp, err := cli.Call(ctx, addr, "echo", []byte("again"))
	require.NoError(t, err, "the first call after the restart succeeds")
	require.Equal(t, "again", string(resp))
	require.Equal(t, uint64(2), cli.Stats().Dials)

	// The janitor's look, with no call at all.
	srv2 := newTransport(t, echo)
	_, err = cli.Call(ctx, srv2.Addr(), "echo", nil)
	require.NoError(t, err)
	open := cli.Stats().OpenConns
	require.NoError(t, srv2.Shutdown())
	require.Eventually(t, func() bool { return cli.Stats().OpenConns == open-1 }, 5*time.Second, 5*time.Millisecond)
}

// TestInlineHandler: a request that arrives alone is served by
// TryServeRequest on the reader goroutine; one it declines goes to
// ServeRequest, and while that blocks, the connection still serves
// others inline.
func TestInlineHandler(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var inline, declined, served atomic.Int64
	h := &inlineBlocking{
		try: func(method string, body []byte) ([]byte, bool, error) {
			switch method {
			case "block":
				declined.Add(1)
				return nil, false, nil
			case "fail":
				inline.Add(1)
				return nil, true, errFromHandler
			}
			inline.Add(1)
			return append([]byte("inline:"), body...), true, nil
		},
		serve: func(ctx context.Context, method string, body []byte) ([]byte, error) {
			served.Add(1)
			if method != "block" {
				return body, nil // a request that did not arrive alone
			}
			started <- struct{}{}
			select {
			case <-release:
				return []byte("released"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}
	srv := newTransport(t, h)
	cli := newTransport(t, echo)
	ctx := testCtx(t)

	slow := callAsync(ctx, cli, srv.Addr(), "block")
	<-started
	for i := range 20 {
		resp, err := cli.Call(ctx, srv.Addr(), "echo", fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("inline:%d", i), string(resp))
	}
	require.Equal(t, int64(20), inline.Load(), "each call waited for its answer, so each request arrived alone")

	// A Send and a failing call, which may arrive together: the second
	// is then not alone and goes to a handler goroutine.
	require.NoError(t, cli.Send(ctx, srv.Addr(), "echo", []byte("one-way")))
	_, err := cli.Call(ctx, srv.Addr(), "fail", nil)
	var rerr *RemoteError
	require.ErrorAs(t, err, &rerr)
	require.Equal(t, errFromHandler.Error(), rerr.Message)
	require.Eventually(t, func() bool { return inline.Load()+served.Load() == 23 }, 5*time.Second, time.Millisecond)

	close(release)
	require.NoError(t, waitErr(t, slow, 5*time.Second))
	require.Equal(t, int64(1), declined.Load())
}

// inlineBlocking is an InlineHandler made of two functions.
type inlineBlocking struct {
	try   func(method string, body []byte) ([]byte, bool, error)
	serve func(ctx context.Context, method string, body []byte) ([]byte, error)
}

func (h *inlineBlocking) ServeRequest(ctx context.Context, _, method string, body []byte) ([]byte, error) {
	return h.serve(ctx, method, body)
}

func (h *inlineBlocking) TryServeRequest(_ context.Context, _, method string, body []byte) ([]byte, bool, error) {
	return h.try(method, body)
}

// TestConcurrentRequestsAreBounded: with MaxConcurrentRequests handlers
// busy, the connection reads no more requests until one finishes; no
// more than that many ever run at once, and every request is served.
func TestConcurrentRequestsAreBounded(t *testing.T) {
	const limit, calls = 2, 6
	release := make(chan struct{})
	var running, most atomic.Int32
	srv := newTransport(t, HandlerFunc(func(ctx context.Context, _, _ string, body []byte) ([]byte, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-release:
			return body, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}), func(c *Config) { c.MaxConcurrentRequests = limit })
	cli := newTransport(t, echo)
	ctx := testCtx(t)

	res := make([]<-chan error, calls)
	for i := range res {
		res[i] = callAsync(ctx, cli, srv.Addr(), "block")
	}
	require.Eventually(t, func() bool { return running.Load() == limit }, 5*time.Second, time.Millisecond)
	require.Never(t, func() bool { return running.Load() > limit }, 100*time.Millisecond, time.Millisecond)
	close(release)
	for _, r := range res {
		require.NoError(t, waitErr(t, r, 5*time.Second))
	}
	require.Equal(t, int32(limit), most.Load())
}
