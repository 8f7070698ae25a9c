package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/faultnet"
	"github.com/troupe-go/troupe/internal/testcerts"
)

// blocking returns a handler that signals started and then waits for
// release or for its context to end. Other methods echo.
func blocking(started chan<- string, release <-chan struct{}) Handler {
	return HandlerFunc(func(ctx context.Context, _, method string, body []byte) ([]byte, error) {
		if method != "block" {
			return body, nil
		}
		started <- method
		select {
		case <-release:
			return []byte("released"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// callAsync runs Call on its own goroutine and delivers its error.
func callAsync(ctx context.Context, tr *Transport, addr, method string) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := tr.Call(ctx, addr, method, nil)
		res <- err
	}()
	return res
}

func waitErr(t *testing.T, res <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(within):
		t.Fatalf("call still running after %v", within)
		return nil
	}
}

func TestCallRoundTrip(t *testing.T) {
	srv := newTransport(t, HandlerFunc(func(ctx context.Context, from, method string, body []byte) ([]byte, error) {
		if method == "whoami" {
			return []byte(from), nil
		}
		return echo(ctx, from, method, body)
	}))
	cli := newTransport(t, echo)
	ctx := testCtx(t)

	resp, err := cli.Call(ctx, srv.Addr(), "echo", []byte("hello"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(resp))

	resp, err = cli.Call(ctx, srv.Addr(), "echo", nil)
	require.NoError(t, err)
	require.Empty(t, resp)

	resp, err = cli.Call(ctx, srv.Addr(), "whoami", nil)
	require.NoError(t, err)
	host, _, err := net.SplitHostPort(string(resp))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)

	_, err = cli.Call(ctx, srv.Addr(), "fail", nil)
	var rerr *RemoteError
	require.ErrorAs(t, err, &rerr)
	require.Equal(t, RemoteError{Addr: srv.Addr(), Method: "fail", Message: errFromHandler.Error()}, *rerr)

	_, err = cli.Call(ctx, srv.Addr(), string(make([]byte, maxMethodLen+1)), nil)
	require.Error(t, err)

	require.Equal(t, uint64(1), cli.Stats().Dials, "every call must reuse the one connection")
}

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	srv := newTransport(t, echo)
	cli := newTransport(t, echo)
	ctx := testCtx(t)

	const callers, calls = 64, 50
	echoConcurrently(ctx, t, cli, srv.Addr(), callers, calls)
	require.Equal(t, uint64(1), cli.Stats().Dials)
	require.Equal(t, uint64(1), srv.Stats().Accepts)
	require.GreaterOrEqual(t, srv.Stats().FramesIn, uint64(callers*calls))
}

func TestSlowHandlerDoesNotBlockFastOne(t *testing.T) {
	started := make(chan string, 1)
	release := make(chan struct{})
	srv := newTransport(t, blocking(started, release))
	cli := newTransport(t, echo)
	ctx := testCtx(t)

	slow := callAsync(ctx, cli, srv.Addr(), "block")
	<-started
	fast, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cli.Call(fast, srv.Addr(), "echo", []byte("fast"))
	require.NoError(t, err, "a slow handler must not hold up the connection")
	require.Equal(t, "fast", string(resp))

	close(release)
	require.NoError(t, waitErr(t, slow, 5*time.Second))
	require.Equal(t, uint64(1), cli.Stats().Dials)
}

func TestCallHonoursContext(t *testing.T) {
	started := make(chan string, 10)
	release := make(chan struct{})
	srv := newTransport(t, blocking(started, release))
	cli := newTransport(t, echo)

	ctx, cancel := context.WithCancel(context.Background())
	res := callAsync(ctx, cli, srv.Addr(), "block")
	<-started
	cancel()
	require.ErrorIs(t, waitErr(t, res, 2*time.Second), context.Canceled)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := cli.Call(ctx, srv.Addr(), "block", nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(begin), 2*time.Second)

	// The abandoned calls' answers arrive later and are dropped by the
	// next call, which reads them on its way to its own; the connection
	// goes on serving.
	close(release)
	resp, err := cli.Call(testCtx(t), srv.Addr(), "block", nil)
	require.NoError(t, err)
	require.Equal(t, "released", string(resp))
	// The two released handlers answer in any order, perhaps after this
	// call's own answer; nobody reads an idle connection, so later calls
	// read what is left.
	require.Eventually(t, func() bool {
		_, err := cli.Call(testCtx(t), srv.Addr(), "block", nil)
		return err == nil && cli.Stats().LateAnswers == 2
	}, 5*time.Second, time.Millisecond)
	require.Equal(t, uint64(1), cli.Stats().Dials)
}

// A peer that stops reading (its handlers are all busy) fills the
// socket: callers must still leave when their context ends, and the
// frames written in part must go out whole once the peer reads again.
func TestCallHonoursContextWhenPeerStopsReading(t *testing.T) {
	ca := testcerts.NewCA(t)
	for _, m := range []struct {
		name string
		opts func(*Config)
	}{
		{"plain", func(*Config) {}},
		{"key", withKeys(key(1))},
		{"tls", withTLS(ca.TLSConfig(t))},
	} {
		t.Run(m.name, func(t *testing.T) {
			started := make(chan string, 1)
			release := make(chan struct{})
			srv := newTransport(t, blocking(started, release), m.opts, func(c *Config) { c.MaxConcurrentRequests = 1 })
			cli := newTransport(t, echo, m.opts)
			ctx := testCtx(t)
			blocked := callAsync(ctx, cli, srv.Addr(), "block")
			<-started

			// One at a time, so that direct writes meet a socket that
			// fills up: far more than the buffers on both sides hold.
			const calls, size = 64, 256 << 10
			for i := range calls {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				begin := time.Now()
				_, err := cli.Call(ctx, srv.Addr(), "echo", bytes.Repeat([]byte{byte(i)}, size))
				cancel()
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.Less(t, time.Since(begin), time.Second, "call %d waited for the socket", i)
			}

			close(release)
			require.NoError(t, waitErr(t, blocked, 10*time.Second))
			want := bytes.Repeat([]byte{7}, size)
			resp, err := cli.Call(ctx, srv.Addr(), "echo", want)
			require.NoError(t, err)
			require.Equal(t, want, resp)
			require.Equal(t, uint64(1), cli.Stats().Dials, "the connection survived")
			require.Zero(t, srv.Stats().BadFrames)
		})
	}
}

func TestPeerShutdownFailsCallsAndRedialWorks(t *testing.T) {
	started := make(chan string, 1)
	srv := newTransport(t, blocking(started, nil))
	addr := srv.Addr()
	cli := newTransport(t, echo)
	ctx := testCtx(t)

	res := callAsync(ctx, cli, addr, "block")
	<-started
	require.NoError(t, srv.Shutdown())
	require.ErrorIs(t, waitErr(t, res, 5*time.Second), ErrPeerUnreachable)

	_, err := cli.Call(ctx, addr, "echo", nil)
	require.ErrorIs(t, err, ErrPeerUnreachable, "nothing listens there now")

	newTransport(t, echo, func(c *Config) { c.BindAddr = addr })
	resp, err := cli.Call(ctx, addr, "echo", []byte("again"))
	require.NoError(t, err)
	require.Equal(t, "again", string(resp))
	require.Equal(t, uint64(3), cli.Stats().Dials)
}

func TestPartitionFailsCallsAndHealRestoresThem(t *testing.T) {
	network := faultnet.New()
	started := make(chan string, 1)
	a := newTransport(t, echo, func(c *Config) { c.Faults = network })
	b := newTransport(t, blocking(started, nil), func(c *Config) {
		c.BindAddr = "127.0.0.2:0"
		c.Faults = network
	})
	ctx := testCtx(t)

	_, err := a.Call(ctx, b.Addr(), "echo", nil)
	require.NoError(t, err)
	res := callAsync(ctx, a, b.Addr(), "block")
	<-started

	network.Block("127.0.0.1", "127.0.0.2")
	require.ErrorIs(t, waitErr(t, res, 5*time.Second), ErrPeerUnreachable, "a cut fails the calls in flight")
	begin := time.Now()
	_, err = a.Call(ctx, b.Addr(), "echo", nil)
	require.ErrorIs(t, err, ErrPeerUnreachable)
	require.ErrorIs(t, err, faultnet.ErrPartitioned)
	require.Less(t, time.Since(begin), time.Second)
	require.Eventually(t, func() bool { return b.Stats().OpenConns == 0 }, 5*time.Second, 5*time.Millisecond)

	network.Heal()
	resp, err := a.Call(ctx, b.Addr(), "echo", []byte("healed"))
	require.NoError(t, err)
	require.Equal(t, "healed", string(resp))
}

// A peer that completes the handshake and then never answers, as a
// vanished host would: calls without a deadline must still fail.
func TestSilentPeerIsDeclaredDead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := handshake(br, c, false, *plainHello(), nil); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, br)
	})
	cli := newTransport(t, echo, func(c *Config) { c.DialTimeout = 200 * time.Millisecond })

	begin := time.Now()
	_, err = cli.Call(context.Background(), ln.Addr().String(), "echo", nil)
	require.ErrorIs(t, err, ErrPeerUnreachable)
	require.Less(t, time.Since(begin), 5*time.Second)
}

// A burst of concurrent requests starts a handler goroutine each; once
// they are idle the janitor ends all but keepIdle of them, so that the
// goroutines of a burst do not stay for the connection's life (the
// fault suite saw them pile up across rounds). The connection goes on
// serving, with new handlers when it needs them, after they ended and
// while the janitor ends them.
func TestIdleHandlersAreDismissed(t *testing.T) {
	const burst = 20
	started := make(chan struct{}, burst)
	var mu sync.Mutex
	release := make(chan struct{})
	srv := newTransport(t, HandlerFunc(func(ctx context.Context, _, _ string, _ []byte) ([]byte, error) {
		mu.Lock()
		r := release
		mu.Unlock()
		started <- struct{}{}
		select {
		case <-r:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}), func(c *Config) { c.DialTimeout = 100 * time.Millisecond })
	cli := newTransport(t, echo)
	ctx := testCtx(t)
	// burstOf makes burst calls at once, waits until every one runs,
	// then lets them all return.
	burstOf := func() {
		t.Helper()
		var calls []<-chan error
		for range burst {
			calls = append(calls, callAsync(ctx, cli, srv.Addr(), "block"))
		}
		for range burst {
			<-started
		}
		mu.Lock()
		close(release)
		release = make(chan struct{})
		mu.Unlock()
		for _, res := range calls {
			require.NoError(t, waitErr(t, res, 5*time.Second))
		}
	}

	burstOf()
	sc := onlyConn(t, srv)
	require.Eventually(t, func() bool { return sc.workers.Load() <= keepIdle }, 10*time.Second, 10*time.Millisecond,
		"idle handlers left: %d", sc.workers.Load())
	for range 5 {
		burstOf() // new handlers, while the janitor dismisses others
	}
	require.Equal(t, uint64(1), srv.Stats().Accepts)
}

// Handlers dismissed while calls keep coming never strand one: with few
// handlers allowed and the janitor looking every 10 ms, every call of a
// steady load is answered.
func TestHandlersDismissedUnderLoad(t *testing.T) {
	srv := newTransport(t, echo, func(c *Config) {
		c.MaxConcurrentRequests = 8
		c.DialTimeout = 20 * time.Millisecond
	})
	cli := newTransport(t, echo)
	ctx := testCtx(t)
	echoConcurrently(ctx, t, cli, srv.Addr(), 32, 200)
}

// echoConcurrently has callers goroutines each make calls echo calls to
// addr, one after another, and fails t unless every one returns what it
// sent.
func echoConcurrently(ctx context.Context, t *testing.T, cli *Transport, addr string, callers, calls int) {
	t.Helper()
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for j := range calls {
				want := fmt.Appendf(nil, "%d/%d", i, j)
				got, err := cli.Call(ctx, addr, "echo", want)
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("got %q, want %q", got, want)
				}
				if err != nil {
					errs <- err
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
}

// onlyConn returns tr's one open connection.
func onlyConn(t *testing.T, tr *Transport) *conn {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	require.Len(t, tr.mu.conns, 1)
	for c := range tr.mu.conns {
		return c
	}
	return nil
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	srv := newTransport(t, echo)
	cli := newTransport(t, echo, func(c *Config) { c.IdleTimeout = 50 * time.Millisecond })
	ctx := testCtx(t)

	_, err := cli.Call(ctx, srv.Addr(), "echo", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return cli.Stats().OpenConns == 0 && srv.Stats().OpenConns == 0
	}, 5*time.Second, 5*time.Millisecond)

	_, err = cli.Call(ctx, srv.Addr(), "echo", nil)
	require.NoError(t, err)
	require.Equal(t, uint64(2), cli.Stats().Dials)
}

func TestFrameTooLarge(t *testing.T) {
	small := func(c *Config) { c.MaxFrameSize = minFrameSize }
	big := make([]byte, 2*minFrameSize)
	srv := newTransport(t, HandlerFunc(func(_ context.Context, _, method string, body []byte) ([]byte, error) {
		if method == "big" {
			return big, nil
		}
		return body, nil
	}), small)
	cli := newTransport(t, echo, small)
	ctx := testCtx(t)

	_, err := cli.Call(ctx, srv.Addr(), "echo", big)
	require.ErrorIs(t, err, ErrFrameTooLarge, "refused before sending")
	require.ErrorIs(t, cli.Send(ctx, srv.Addr(), "echo", big), ErrFrameTooLarge)

	_, err = cli.Call(ctx, srv.Addr(), "big", nil)
	var rerr *RemoteError
	require.ErrorAs(t, err, &rerr)
	require.Contains(t, rerr.Message, ErrFrameTooLarge.Error())

	_, err = cli.Call(ctx, srv.Addr(), "echo", []byte("fits"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), cli.Stats().Dials)
	require.Zero(t, srv.Stats().BadFrames)
	require.Zero(t, cli.Stats().BadFrames)
}

func TestSend(t *testing.T) {
	got := make(chan string, 1)
	srv := newTransport(t, HandlerFunc(func(_ context.Context, _, method string, body []byte) ([]byte, error) {
		got <- method + ":" + string(body)
		return nil, errors.New("nobody hears this")
	}))
	cli := newTransport(t, echo)

	require.NoError(t, cli.Send(testCtx(t), srv.Addr(), "note", []byte("hi")))
	select {
	case s := <-got:
		require.Equal(t, "note:hi", s)
	case <-time.After(5 * time.Second):
		t.Fatal("the one-way request was not served")
	}
}

func TestShutdown(t *testing.T) {
	started := make(chan string, 1)
	srv := newTransport(t, blocking(started, nil))
	cli := newTransport(t, echo)

	res := callAsync(context.Background(), cli, srv.Addr(), "block")
	<-started
	require.NoError(t, cli.Shutdown())
	require.ErrorIs(t, waitErr(t, res, 5*time.Second), ErrClosed)
	require.NoError(t, cli.Shutdown(), "a second Shutdown is harmless")

	_, err := cli.Call(testCtx(t), srv.Addr(), "echo", nil)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, cli.Send(testCtx(t), srv.Addr(), "echo", nil), ErrClosed)
	// The server notices the caller went, and its handler's context ends.
	require.Eventually(t, func() bool { return srv.Stats().OpenConns == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestNewRejectsBadInput(t *testing.T) {
	_, err := New(context.Background(), Config{BindAddr: "127.0.0.1:0"}, nil)
	require.Error(t, err)
	_, err = New(context.Background(), Config{}, echo)
	require.Error(t, err)
}

// A handler sees the dialling node's name, sent in the handshake, as the
// sender; and an error's code reaches the caller beside its message.
func TestSenderNameAndErrorCode(t *testing.T) {
	errBusy := errors.New("busy")
	srv := newTransport(t, HandlerFunc(func(_ context.Context, from, method string, _ []byte) ([]byte, error) {
		if method == "fail" {
			return nil, fmt.Errorf("wrapped: %w", &CodedError{Code: 7, Err: errBusy})
		}
		return []byte(from), nil
	}), withKeys(key(1)))
	cli := newTransport(t, echo, withKeys(key(1)), func(c *Config) { c.Name = "node-a" })
	got, err := cli.Call(testCtx(t), srv.Addr(), "who", nil)
	require.NoError(t, err)
	require.Equal(t, "node-a", string(got))

	_, err = cli.Call(testCtx(t), srv.Addr(), "fail", nil)
	rerr, ok := errors.AsType[*RemoteError](err)
	require.True(t, ok, "got %v", err)
	require.Equal(t, uint64(7), rerr.Code)
	require.Equal(t, "wrapped: busy", rerr.Message)

	_, err = cli.Call(testCtx(t), srv.Addr(), "fail", nil)
	require.NotErrorIs(t, err, errBusy, "the identity comes back only through a layer that maps codes")
}

// TrySend sends only over a connection that is already open.
func TestTrySendNeverDials(t *testing.T) {
	got := make(chan string, 1)
	srv := newTransport(t, HandlerFunc(func(_ context.Context, _, method string, body []byte) ([]byte, error) {
		if method == "note" {
			got <- string(body)
		}
		return nil, nil
	}))
	cli := newTransport(t, echo)
	require.ErrorIs(t, cli.TrySend(srv.Addr(), "note", []byte("early")), ErrWouldBlock)
	require.Zero(t, cli.Stats().Dials, "TrySend dialled")

	_, err := cli.Call(testCtx(t), srv.Addr(), "open", nil)
	require.NoError(t, err)
	require.NoError(t, cli.TrySend(srv.Addr(), "note", []byte("late")))
	select {
	case b := <-got:
		require.Equal(t, "late", b)
	case <-testCtx(t).Done():
		t.Fatal("the message sent with TrySend never arrived")
	}
}
