package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/troupe-go/troupe/internal/faultnet"
)

// Transport sends requests to peers and serves theirs. It is safe for
// concurrent use. Create it with New and stop it with Shutdown.
type Transport struct {
	cfg       Config
	handler   Handler
	inline    InlineHandler // handler, if it serves some requests without blocking
	log       *slog.Logger
	ln        net.Listener
	host      string // bound host, which faultnet knows this node by
	mode      uint8
	dialer    net.Dialer
	clientTLS *tls.Config
	serverTLS *tls.Config

	epoch  time.Time       // for since
	ctx    context.Context // ends at Shutdown; parent of every connection's context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the transport, handlers included
	bufs   sync.Pool      // *[]byte frame buffers, see frameBuf
	stats  counters
	// lastRefusal is when a connection over MaxConns or MaxConnsPerIP
	// was last logged at Warn (since), so that a flood logs once in a
	// while rather than once per connection.
	lastRefusal atomic.Int64

	// mu guards the connection tables. It is never held across network
	// I/O, nor together with a conn's mu.
	mu struct {
		sync.Mutex
		closed bool
		peers  map[string]*conn     // the outgoing connection to each dialled address
		dials  map[string]*dialCall // dials in progress, so that concurrent calls share one
		conns  map[*conn]struct{}   // every open connection, both directions
		// Incoming connections from accept until they close, handshakes
		// included: in all, and by remote IP (MaxConns, MaxConnsPerIP).
		inbound int
		perIP   map[netip.Addr]int
	}
}

// dialCall is a dial in progress; done is closed when c or err is set.
type dialCall struct {
	done chan struct{}
	c    *conn
	err  error
}

// Stats are counters since New, plus the connections open now.
type Stats struct {
	Dials             uint64 // outgoing connections attempted
	Accepts           uint64 // incoming connections accepted, before their handshake
	HandshakeFailures uint64 // connections refused or failed in the handshake, either direction
	FramesIn          uint64
	FramesOut         uint64
	BytesIn           uint64 // frame bytes on the wire: headers and AES-GCM tags, not TLS records
	BytesOut          uint64
	BadFrames         uint64 // connections closed for a malformed, oversized, truncated or unauthentic frame
	LateAnswers       uint64 // answers that arrived after their call gave up, discarded
	RefusedConns      uint64 // incoming connections closed at accept: MaxConns or MaxConnsPerIP reached
	KeyDrops          uint64 // connections closed because their cluster key was removed (KeysChanged)
	OpenConns         int    // connections past their handshake, both directions
}

type counters struct {
	dials, accepts, handshakeFailures      atomic.Uint64
	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
	badFrames, lateAnswers                 atomic.Uint64
	refusedConns, keyDrops                 atomic.Uint64
}

// New validates cfg, listens on cfg.BindAddr and starts serving requests
// with h. ctx bounds only the call to New; the transport runs until
// Shutdown, and handler contexts carry ctx's values.
func New(ctx context.Context, cfg Config, h Handler) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("transport: nil Handler")
	}
	cfg = cfg.withDefaults()
	keys := make([][]byte, len(cfg.Keys))
	for i, k := range cfg.Keys {
		keys[i] = bytes.Clone(k)
	}
	cfg.Keys = keys

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	inline, _ := h.(InlineHandler)
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	t := &Transport{
		cfg:     cfg,
		handler: h,
		inline:  inline,
		epoch:   time.Now(),
		log:     cfg.Logger.With("transport", ln.Addr().String()),
		ln:      ln,
		host:    host,
		mode:    modePlain,
	}
	// Dial from the bound address, so that peers and faultnet see this
	// node's IP rather than whatever the routing table picks.
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		t.dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	switch {
	case cfg.TLS != nil:
		t.mode = modeTLS
		t.clientTLS = cfg.TLS.Clone()
		t.serverTLS = cfg.TLS.Clone()
		t.serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
	case len(cfg.Keys) > 0:
		t.mode = modeKey
	}
	t.ctx, t.cancel = context.WithCancel(context.WithoutCancel(ctx))
	t.mu.peers = map[string]*conn{}
	t.mu.dials = map[string]*dialCall{}
	t.mu.conns = map[*conn]struct{}{}
	t.mu.perIP = map[netip.Addr]int{}
	t.wg.Go(t.acceptLoop)
	t.wg.Go(t.janitor)
	return t, nil
}

// since is the monotonic time since New, in nanoseconds.
func (t *Transport) since() int64 { return int64(time.Since(t.epoch)) }

// Addr returns the address the transport listens on, with the actual port.
func (t *Transport) Addr() string { return t.ln.Addr().String() }

// Call sends a request to the transport listening on addr and returns the
// body of its answer, which belongs to the caller. Call does not keep body
// after it returns.
//
// Errors: the context's error (wrapped) when ctx ends first; *RemoteError
// when the peer's handler failed; ErrPeerUnreachable, ErrHandshake,
// ErrFrameTooLarge and ErrClosed as documented on each.
func (t *Transport) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	return t.do(ctx, kindRequest, addr, method, body)
}

// Send queues a one-way request to addr and returns without waiting for
// it to be written or served. It may be lost if the connection breaks. It
// returns the same errors as Call, except *RemoteError.
func (t *Transport) Send(ctx context.Context, addr, method string, body []byte) error {
	_, err := t.do(ctx, kindSend, addr, method, body)
	return err
}

// TrySend is Send that never waits: when it would have to (no connection
// to addr is open yet, or its queue is full) it sends nothing and returns
// ErrWouldBlock, and the caller may Send from a goroutine that can wait.
// A goroutine that owns state and must not block, such as an event loop,
// sends this way.
func (t *Transport) TrySend(addr, method string, body []byte) error {
	if err := checkMethod(method); err != nil {
		return err
	}
	t.mu.Lock()
	c, closed := t.mu.peers[addr], t.mu.closed
	t.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case c == nil:
		return ErrWouldBlock
	}
	_, err := c.call(context.Background(), kindSend, method, body, true)
	if errors.Is(err, errRetired) {
		return ErrWouldBlock
	}
	return err
}

// checkMethod refuses a method name that no frame can carry.
func checkMethod(method string) error {
	if len(method) > maxMethodLen {
		return fmt.Errorf("transport: method name of %d bytes, limit %d", len(method), maxMethodLen)
	}
	return nil
}

func (t *Transport) do(ctx context.Context, kind uint8, addr, method string, body []byte) ([]byte, error) {
	if err := checkMethod(method); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: %s on %s: %w", method, addr, err)
	}
	for {
		c, err := t.connTo(ctx, addr)
		if err != nil {
			return nil, err
		}
		resp, err := c.call(ctx, kind, method, body, false)
		// The janitor closed the connection as idle in the instant we
		// picked it, before anything was sent: dial again.
		if !errors.Is(err, errRetired) {
			return resp, err
		}
	}
}

// connTo returns the connection to addr, dialling it if there is none.
// Concurrent callers share one dial, which runs on its own goroutine so
// that a caller whose context ends can leave while the others wait.
func (t *Transport) connTo(ctx context.Context, addr string) (*conn, error) {
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	if c := t.mu.peers[addr]; c != nil {
		t.mu.Unlock()
		return c, nil
	}
	d := t.mu.dials[addr]
	if d == nil {
		d = &dialCall{done: make(chan struct{})}
		t.mu.dials[addr] = d
		t.wg.Go(func() { t.dial(addr, d) })
	}
	t.mu.Unlock()
	select {
	case <-d.done:
		return d.c, d.err
	case <-ctx.Done():
		return nil, fmt.Errorf("transport: dial %s: %w", addr, ctx.Err())
	}
}

func (t *Transport) dial(addr string, d *dialCall) {
	c, err := t.connect(addr)
	t.mu.Lock()
	delete(t.mu.dials, addr)
	if err == nil {
		err = t.startLocked(c)
	}
	t.mu.Unlock()
	if err != nil {
		if c != nil {
			c.close(err)
			c = nil
		}
		t.log.Debug("dial failed", "addr", addr, "err", err)
	}
	d.c, d.err = c, err
	close(d.done)
}

func (t *Transport) connect(addr string) (*conn, error) {
	t.stats.dials.Add(1)
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.DialTimeout)
	defer cancel()
	// This is faultnet.Network.Dial with a context, so that Shutdown does
	// not wait out a connect to a dead host.
	if t.cfg.Faults != nil && t.cfg.Faults.Drop(t.host, addr) {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrPeerUnreachable, addr, faultnet.ErrPartitioned)
	}
	raw, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		if t.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w: dial %s: %w", ErrPeerUnreachable, addr, err)
	}
	if t.cfg.Faults != nil {
		raw = t.cfg.Faults.Track(raw, t.host, addr)
	}
	sock := socketOf(raw)
	c, err := t.open(ctx, raw, sock, addr, true)
	if err != nil {
		_ = raw.Close()
		if t.ctx.Err() != nil {
			return nil, ErrClosed
		}
		t.stats.handshakeFailures.Add(1)
		return nil, fmt.Errorf("%w (dialing %s)", err, addr)
	}
	return c, nil
}

func (t *Transport) acceptLoop() {
	var backoff time.Duration
	for {
		raw, err := t.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return // Shutdown
			}
			// As net/http does: errors such as EMFILE pass, so wait
			// rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.log.Warn("accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		t.stats.accepts.Add(1)
		remote := raw.RemoteAddr().String()
		ip := ipOf(remote)
		if why := t.admit(ip); why != "" {
			_ = raw.Close()
			t.refused(remote, why)
			continue
		}
		if t.cfg.Faults != nil {
			raw = t.cfg.Faults.Track(raw, t.host, remote)
		}
		sock := socketOf(raw)
		// The handshake runs on its own goroutine so that a slow or
		// silent peer does not hold up the next accept.
		t.wg.Go(func() { t.serve(raw, sock, remote, ip) })
	}
}

// ipOf returns the IP address of a remote "ip:port", or the zero Addr
// (one bucket for all such) if it is not one.
func ipOf(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// admit takes a slot for an incoming connection from ip, or returns why
// there is none. The slot is given back by release.
func (t *Transport) admit(ip netip.Addr) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.mu.inbound >= t.cfg.MaxConns:
		return "MaxConns reached"
	case t.mu.perIP[ip] >= t.cfg.MaxConnsPerIP:
		return "MaxConnsPerIP reached"
	}
	t.mu.inbound++
	t.mu.perIP[ip]++
	return ""
}

// release gives back an incoming connection's slot.
func (t *Transport) release(ip netip.Addr) {
	t.mu.Lock()
	t.mu.inbound--
	if t.mu.perIP[ip]--; t.mu.perIP[ip] <= 0 {
		delete(t.mu.perIP, ip)
	}
	t.mu.Unlock()
}

// refusalLogEvery is how often a flood of connections over the limits
// is logged at Warn; the others are logged at Debug.
const refusalLogEvery = 10 * time.Second

// refused counts and logs an incoming connection closed at accept.
func (t *Transport) refused(remote, why string) {
	n := t.stats.refusedConns.Add(1)
	now, last := t.since(), t.lastRefusal.Load()
	if (last == 0 || now-last >= int64(refusalLogEvery)) && t.lastRefusal.CompareAndSwap(last, max(now, 1)) {
		t.log.Warn("refusing incoming connections: too many open", "remote", remote, "why", why,
			"max_conns", t.cfg.MaxConns, "max_conns_per_ip", t.cfg.MaxConnsPerIP, "refused_so_far", n)
		return
	}
	t.log.Debug("refused incoming connection", "remote", remote, "why", why)
}

// serve runs the handshake of an accepted connection, which holds a slot
// for ip (admit), and starts it.
func (t *Transport) serve(raw net.Conn, sock syscall.RawConn, remote string, ip netip.Addr) {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.DialTimeout)
	defer cancel()
	c, err := t.open(ctx, raw, sock, remote, false)
	if err != nil {
		_ = raw.Close()
		t.release(ip)
		if t.ctx.Err() == nil {
			t.stats.handshakeFailures.Add(1)
			t.log.Warn("refused connection", "remote", remote, "err", err)
		}
		return
	}
	c.slot = ip // the conn gives it back when it closes (forget)
	t.mu.Lock()
	err = t.startLocked(c)
	t.mu.Unlock()
	if err != nil {
		c.close(err)
	}
}

// socketOf returns the socket under a TCP connection, for direct writes
// and for looking at an idle connection, or nil. It is taken after Faults
// wraps the connection, so that direct writes wait for a fault network's
// delay as the writer's do.
func socketOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// open runs the TLS handshake if configured, then the transport's own,
// within ctx, and returns the connection ready to start. sock is raw's
// socket, if known.
func (t *Transport) open(ctx context.Context, raw net.Conn, sock syscall.RawConn, addr string, dialer bool) (*conn, error) {
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	// Deadlines bound the handshake's reads and writes; moving them into
	// the past when ctx ends lets Shutdown cut a handshake short.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })

	var err error
	nc := raw
	switch {
	case t.mode != modeTLS:
	case dialer:
		tc := tls.Client(raw, t.tlsFor(addr))
		err = tc.HandshakeContext(ctx)
		nc = tc
	default:
		tc := tls.Server(raw, t.serverTLS)
		err = tc.HandshakeContext(ctx)
		nc = tc
	}
	var br *bufio.Reader
	var sess session
	if err != nil {
		err = fmt.Errorf("%w: TLS: %w", ErrHandshake, err)
	} else {
		br = bufio.NewReaderSize(nc, readBufSize)
		sess, err = handshake(br, nc, dialer, t.hello(), t.keys())
	}
	if !stop() && err == nil {
		err = fmt.Errorf("%w: %w", ErrHandshake, ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return newConn(t, raw, nc, sock, br, sess, addr, dialer), nil
}

// KeysChanged tells the transport that the cluster keys (Config.KeySource)
// changed, and returns how many connections it closed:
//
//   - every connection made with a key that they no longer hold, dialled
//     or accepted, is closed at once: a call in flight on one fails with
//     ErrPeerUnreachable, and the next call dials again with the current
//     keys. Call it after removing a key, so that the removed key carries
//     no traffic from then on.
//   - a dialled connection made with a key other than the primary (the
//     first) takes no new call, which dials a new connection with the
//     primary, and is closed when its calls are done (by the janitor,
//     within DialTimeout). Call it after changing the primary key, so
//     that when the old key is removed no connection of this node's
//     peers still uses it and the removal fails no call.
func (t *Transport) KeysChanged() int {
	keys := t.keys()
	if len(keys) == 0 {
		return 0
	}
	var stale, old []*conn
	t.mu.Lock()
	for c := range t.mu.conns {
		switch {
		case c.key == nil:
		case !holdsKey(keys, c.key):
			stale = append(stale, c)
		case c.dialer && !bytes.Equal(c.key, keys[0]):
			old = append(old, c)
			if t.mu.peers[c.addr] == c {
				delete(t.mu.peers, c.addr)
			}
		}
	}
	t.mu.Unlock()
	for _, c := range old {
		c.retire()
	}
	for _, c := range stale {
		t.stats.keyDrops.Add(1)
		c.close(fmt.Errorf("%w: connection to %s: its cluster key was removed", ErrPeerUnreachable, c.addr))
	}
	if len(stale)+len(old) > 0 {
		t.log.Info("cluster keys changed", "closed_conns", len(stale), "redialled_conns", len(old))
	}
	return len(stale)
}

func holdsKey(keys [][]byte, k []byte) bool {
	return slices.ContainsFunc(keys, func(h []byte) bool { return bytes.Equal(h, k) })
}

// keys returns the cluster keys for a handshake, primary first.
func (t *Transport) keys() [][]byte {
	if t.cfg.KeySource != nil {
		if k := t.cfg.KeySource(); len(k) > 0 {
			return k
		}
	}
	return t.cfg.Keys
}

func (t *Transport) hello() hello {
	h := hello{version: protocolVersion, mode: t.mode, maxFrame: uint32(t.cfg.MaxFrameSize), name: t.cfg.Name}
	_, _ = rand.Read(h.nonce[:]) // crypto/rand.Read never fails since Go 1.24
	return h
}

// tlsFor returns the client TLS config for dialling addr.
func (t *Transport) tlsFor(addr string) *tls.Config {
	if t.clientTLS.ServerName != "" {
		return t.clientTLS
	}
	cfg := t.clientTLS.Clone()
	cfg.ServerName, _, _ = net.SplitHostPort(addr)
	return cfg
}

// startLocked registers c and starts its goroutines. Holding t.mu
// orders it before Shutdown, which then sees c and closes it, and before
// or after KeysChanged: a conn whose handshake used a key that was
// removed meanwhile is refused here, or seen and closed there.
func (t *Transport) startLocked(c *conn) error {
	if t.mu.closed {
		return ErrClosed
	}
	if c.key != nil && !holdsKey(t.keys(), c.key) {
		t.stats.keyDrops.Add(1)
		return fmt.Errorf("%w: the cluster key of %s was removed during the handshake", ErrHandshake, c.addr)
	}
	t.mu.conns[c] = struct{}{}
	if c.dialer {
		t.mu.peers[c.addr] = c
	}
	if !c.dialer {
		t.wg.Go(c.readLoop) // a dialled conn is read by its callers
	}
	t.wg.Go(c.writeLoop)
	t.log.Debug("connection open", "remote", c.addr, "dialed", c.dialer)
	return nil
}

// forget drops a closed connection from the tables and, if it was
// accepted, gives back its slot.
func (t *Transport) forget(c *conn) {
	t.mu.Lock()
	delete(t.mu.conns, c)
	if t.mu.peers[c.addr] == c {
		delete(t.mu.peers, c.addr)
	}
	t.mu.Unlock()
	if !c.dialer {
		t.release(c.slot)
	}
}

// janitor closes idle connections and those that went silent with calls
// in flight. It ticks at half the shorter timeout, so each is enforced
// within one tick.
func (t *Transport) janitor() {
	tick := min(t.cfg.DialTimeout, t.cfg.IdleTimeout) / 2
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
		case <-t.ctx.Done():
			return
		}
		t.mu.Lock()
		conns := slices.Collect(maps.Keys(t.mu.conns))
		t.mu.Unlock()
		for _, c := range conns {
			c.sweep(tick)
		}
	}
}

// Stats returns the transport's counters.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	open := len(t.mu.conns)
	t.mu.Unlock()
	s := &t.stats
	return Stats{
		Dials:             s.dials.Load(),
		Accepts:           s.accepts.Load(),
		HandshakeFailures: s.handshakeFailures.Load(),
		FramesIn:          s.framesIn.Load(),
		FramesOut:         s.framesOut.Load(),
		BytesIn:           s.bytesIn.Load(),
		BytesOut:          s.bytesOut.Load(),
		BadFrames:         s.badFrames.Load(),
		LateAnswers:       s.lateAnswers.Load(),
		RefusedConns:      s.refusedConns.Load(),
		KeyDrops:          s.keyDrops.Load(),
		OpenConns:         open,
	}
}

// Shutdown stops listening, closes every connection, failing the calls in
// flight with ErrClosed, and waits for every goroutine of the transport,
// handlers included, to return. Handlers see their context end. Calling
// it again waits the same way and returns nil.
func (t *Transport) Shutdown() error {
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.mu.closed = true
	conns := slices.Collect(maps.Keys(t.mu.conns))
	t.mu.Unlock()

	var err error
	if cerr := t.ln.Close(); cerr != nil {
		err = fmt.Errorf("transport: close listener: %w", cerr)
	}
	// Connections first, then the context, so that handlers see their
	// context end only once no answer can be sent (see conn.close).
	for _, c := range conns {
		c.close(ErrClosed)
	}
	t.cancel()
	t.wg.Wait()
	return err
}

// frameBuf encodes f into a pooled buffer with room for an AES-GCM tag,
// so that the writer can seal it in place.
func (t *Transport) frameBuf(f frame) *[]byte {
	n := lengthSize + frameSize(f) + gcmTagSize
	bp, _ := t.bufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < n {
		b := make([]byte, 0, max(n, 512))
		bp = &b
	}
	*bp = appendFrame((*bp)[:0], f)
	return bp
}

// putBuf returns a buffer to the pool. Large ones are left to the GC, so
// that one big frame does not pin its memory.
func (t *Transport) putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		t.bufs.Put(bp)
	}
}
