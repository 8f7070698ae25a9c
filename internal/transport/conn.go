package transport

import (
	"bufio"
	"cmp"
	"context"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	queueLen     = 64 // frames waiting for a connection's writer; callers block beyond
	readBufSize  = 32 << 10
	writeBufSize = 32 << 10
	maxPooledBuf = 64 << 10
)

// quietAfter is how long a dialled conn may go without a call before the
// next call checks that the peer did not close it: long enough that
// back-to-back calls never pay for the look.
const quietAfter = 10 * time.Millisecond

// errRetired closes a dialled connection that the janitor found idle, or
// that the peer closed while idle. No call was using it, so a call that
// meets it just dials again.
var errRetired = errors.New("transport: idle connection closed")

// conn is one established connection. A dialled conn carries this node's
// calls and reads their answers; an accepted conn reads the peer's
// requests and writes the answers. Keeping the roles apart means a
// dialled conn is read by the callers waiting on it, who never block on
// anything but the socket, which is what lets an accepted conn's reader
// block on MaxConcurrentRequests without deadlock.
//
// Reads: a dialled conn has no reader goroutine. A caller waiting for its
// answer reads the connection itself while nobody else does (it holds
// rtok), passes the answers of other calls to their waiters, and hands
// the read side on when its own answer comes; so a lone call's answer
// goes from the socket to its caller with no goroutine in between. An
// accepted conn has a reader goroutine, which serves a request itself
// when nothing else is waiting to be read and the handler can serve it
// without blocking (InlineHandler), and otherwise hands it to one of up
// to MaxConcurrentRequests handler goroutines, started as needed and
// reused until the connection closes (a reused goroutine keeps the stack
// that decoding a request grew, instead of growing a fresh one each time).
//
// Writes: whoever holds wmu owns the write side. A caller or handler with
// a frame to send takes it only if it is free and nothing is queued, and
// then writes the frame with one non-blocking system call (see
// writeDirect); otherwise it queues the frame for the writer goroutine,
// which drains the queue into bw and flushes when it is empty. So a lone
// frame costs no goroutine hand-off, frames under load share system
// calls, and no caller ever blocks in a write that a stalled peer could
// hold up: that is only ever the writer goroutine.
type conn struct {
	t       *Transport
	raw     net.Conn // the TCP connection; closing it, unlike a TLS close, never blocks
	addr    string   // the dialled address, or the peer's address if accepted
	peer    string   // the peer's name from its hello: the from of its requests
	dialer  bool
	peerMax int // the peer's MaxFrameSize
	// key is the cluster key the handshake agreed on (nil without one):
	// KeysChanged closes the conn when the key is removed.
	key []byte
	// slot is the remote IP whose MaxConnsPerIP slot an accepted conn
	// holds until it closes (set before it starts).
	slot netip.Addr

	sock syscall.RawConn // raw's socket; nil if raw is not a socket

	// fr reads raw or TLS over it. An accepted conn's reader goroutine
	// owns it; on a dialled conn, whoever holds rtok.
	fr   frameReader
	rtok chan struct{} // dialled conns: holding its one slot is reading
	// interrupted is set when a reader's context ended and moved the
	// read deadline into the past; the next reader clears it.
	interrupted   atomic.Bool
	interruptFunc func()

	// wmu guards the write side: bw, sealing and rest. The writer
	// goroutine takes it to drain the queue and releases it only with bw
	// flushed; others only ever TryLock it.
	wmu     sync.Mutex
	bw      *bufio.Writer // writes raw or TLS over it
	direct  bool          // frames may be written to sock directly: not with TLS
	seal    cipher.AEAD   // nil unless using a cluster key
	sealSeq uint64
	iv      [12]byte
	rest    []byte  // the unwritten tail of a direct write, for the writer to finish first
	restBuf *[]byte // the buffer rest lies in
	// The arguments and results of sockWrite, kept here so that a direct
	// write allocates nothing.
	sockBuf  []byte
	sockN    int
	sockErr  error
	sockFunc func(fd uintptr) bool

	queue chan *[]byte  // encoded frames for the writer
	kick  chan struct{} // tells the writer that rest is set

	// Accepted conns: handler goroutines. work hands a request to an idle
	// one; workers counts those alive, at most MaxConcurrentRequests
	// (only the reader goroutine adds to it); running counts those busy.
	// The janitor ends idle handlers beyond a few with dismiss tokens, so
	// that a burst does not leave them all behind for the connection's
	// life; a handler that ends says so on ended, for a reader waiting
	// for one.
	work    chan frame
	workers atomic.Int32
	running atomic.Int32
	dismiss chan struct{}
	ended   chan struct{}

	ctx    context.Context // handlers' context; ends when the connection closes
	cancel context.CancelFunc
	done   chan struct{} // closed when the connection closes
	once   sync.Once
	err    error // why it closed; set before done is closed

	reads atomic.Uint64 // frames read, for the janitor

	// Janitor goroutine only.
	seenReads, seenIDs uint64
	idleFor            time.Duration
	silentTicks        int

	mu struct {
		sync.Mutex
		nextID  uint64                // ids of calls and sends; 0 is for pings
		pending map[uint64]chan frame // dialled conns: calls waiting for their answer
		// retired: take no more calls. Set by the janitor on an idle
		// conn, which it then closes, or by KeysChanged on a conn made
		// with a key other than the primary, which the janitor closes
		// once its calls are done.
		retired bool
		// lastCall is when a call last found no other call pending
		// (Transport.since): from then on nobody may have been reading.
		lastCall int64
	}
}

// newConn builds a conn over nc, which is raw or a TLS connection over
// it. sock is raw's socket, if known; frames are written to it directly
// unless nc is TLS, and then every frame goes through the writer
// goroutine.
func newConn(t *Transport, raw, nc net.Conn, sock syscall.RawConn, br *bufio.Reader, s session, addr string, dialer bool) *conn {
	c := &conn{
		t:       t,
		raw:     raw,
		addr:    addr,
		peer:    cmp.Or(s.peerName, addr),
		dialer:  dialer,
		peerMax: s.peerMax,
		key:     s.key,
		fr:      frameReader{r: br, max: t.cfg.MaxFrameSize, open: s.open},
		bw:      bufio.NewWriterSize(nc, writeBufSize),
		sock:    sock,
		direct:  directWrites && sock != nil && nc == raw,
		seal:    s.seal,
		queue:   make(chan *[]byte, queueLen),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	c.sockFunc = c.sockWrite
	c.interruptFunc = c.interruptRead
	c.mu.lastCall = t.since()
	c.ctx, c.cancel = context.WithCancel(t.ctx)
	if dialer {
		c.mu.pending = map[uint64]chan frame{}
		c.rtok = make(chan struct{}, 1)
	} else {
		c.work = make(chan frame)
		c.dismiss = make(chan struct{})
		c.ended = make(chan struct{}, 1)
	}
	return c
}

// close closes the connection once, for reason err, which the calls still
// waiting on it return.
func (c *conn) close(err error) {
	c.once.Do(func() {
		c.err = err
		// Out of the pool first, so that a call woken by done that
		// calls again dials a new connection.
		c.t.forget(c)
		close(c.done)
		// Close before cancelling, so that a handler woken by the
		// cancellation cannot get an answer onto the wire.
		_ = c.raw.Close()
		c.cancel()
		c.t.log.Debug("connection closed", "remote", c.addr, "dialed", c.dialer, "reason", err)
	})
}

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// call sends a request or, for kindSend, queues it, and waits for the
// answer. With noWait, a request that cannot be written or queued at once
// (the queue is full) is not sent: call returns ErrWouldBlock.
func (c *conn) call(ctx context.Context, kind uint8, method string, body []byte, noWait bool) ([]byte, error) {
	req := frame{kind: kind, method: method, body: body}
	if n := frameSize(req); n > c.peerMax {
		return nil, fmt.Errorf("%w: %s request of %d bytes, %s accepts %d", ErrFrameTooLarge, method, n, c.addr, c.peerMax)
	}
	var answer chan frame
	c.mu.Lock()
	if len(c.mu.pending) == 0 {
		now := c.t.since()
		quiet := now-c.mu.lastCall > int64(quietAfter)
		c.mu.lastCall = now
		if quiet {
			// Nobody has read the connection for a while, so nobody
			// noticed if the peer closed it (it restarted, say): look
			// before sending, and dial again if it did.
			c.mu.Unlock()
			if c.closeIfPeerGone() {
				return nil, errRetired
			}
			c.mu.Lock()
		}
	}
	if c.mu.retired {
		c.mu.Unlock()
		return nil, errRetired
	}
	c.mu.nextID++
	req.id = c.mu.nextID
	if kind == kindRequest {
		answer = make(chan frame, 1)
		c.mu.pending[req.id] = answer
	}
	c.mu.Unlock()

	b := c.t.frameBuf(req)
	if c.writeDirect(b) {
		return c.wait(ctx, req.id, method, answer)
	}
	if noWait {
		select {
		case c.queue <- b:
			return c.wait(ctx, req.id, method, answer)
		default:
			c.t.putBuf(b)
			c.abandon(req.id)
			return nil, ErrWouldBlock
		}
	}
	select {
	case c.queue <- b:
	case <-c.done:
		c.t.putBuf(b)
		return nil, c.err
	case <-ctx.Done():
		c.t.putBuf(b)
		c.abandon(req.id)
		return nil, fmt.Errorf("transport: %s on %s: %w", method, c.addr, ctx.Err())
	}
	return c.wait(ctx, req.id, method, answer)
}

// wait waits for the answer to the call with this id, once its request
// is written or queued; answer is nil for a Send. While nobody else reads
// the connection, it reads it itself (see readFor).
func (c *conn) wait(ctx context.Context, id uint64, method string, answer chan frame) ([]byte, error) {
	if answer == nil {
		return nil, nil
	}
	var f frame
	select {
	case f = <-answer:
	case c.rtok <- struct{}{}:
		var err error
		f, err = c.readFor(ctx, id, answer)
		<-c.rtok // the next waiter reads on
		if err != nil {
			return nil, c.failed(method, err)
		}
	case <-c.done:
		select {
		case f = <-answer: // it made it just before the close
		default:
			return nil, c.err
		}
	case <-ctx.Done():
		c.abandon(id)
		return nil, c.failed(method, ctx.Err())
	}
	if f.kind == kindError {
		return nil, parseRemoteError(c.addr, method, f.body)
	}
	return f.body, nil
}

// failed is the error of a call that got no answer: the context's, or
// why the connection closed.
func (c *conn) failed(method string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("transport: %s on %s: %w", method, c.addr, err)
	}
	return err
}

// readFor reads the connection for the call with this id, holding rtok:
// it passes the answers of other calls to their waiters and returns its
// own, the context's error when ctx ends first, or why the connection
// closed. A frame half read when ctx ends stays in c.fr for the next
// reader.
func (c *conn) readFor(ctx context.Context, id uint64, answer chan frame) (frame, error) {
	select {
	case f := <-answer: // the previous reader read it
		return f, nil
	default:
	}
	if c.interrupted.Swap(false) {
		_ = c.raw.SetReadDeadline(time.Time{})
	}
	// A context that ends interrupts the read by moving the deadline
	// into the past; the read fails with a timeout and we leave.
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, c.interruptFunc)
		defer stop()
	}
	for {
		f, err := c.readFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if err := ctx.Err(); err != nil {
				c.abandon(id)
				return frame{}, err
			}
			// A late interruption meant for an earlier reader.
			c.interrupted.Store(false)
			_ = c.raw.SetReadDeadline(time.Time{})
			continue
		}
		if err == nil {
			if f.id == id && (f.kind == kindResponse || f.kind == kindError) {
				c.abandon(id) // answered: out of the pending table
				return f, nil
			}
			err = c.dispatch(f)
		}
		if err != nil {
			c.readFailed(err)
			select {
			case f := <-answer: // dispatched before the failure
				return f, nil
			default:
				return frame{}, c.err
			}
		}
	}
}

// interruptRead ends the read in progress on a dialled conn: its reader's
// context ended.
func (c *conn) interruptRead() {
	c.interrupted.Store(true)
	_ = c.raw.SetReadDeadline(aLongTimeAgo)
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// abandon forgets a call that gave up, so that its late answer is
// discarded.
func (c *conn) abandon(id uint64) {
	c.mu.Lock()
	delete(c.mu.pending, id)
	c.mu.Unlock()
}

// readFrame reads the next frame and counts it. Only the conn's reader
// calls it.
func (c *conn) readFrame() (frame, error) {
	f, n, err := c.fr.read()
	if err == nil {
		c.t.stats.framesIn.Add(1)
		c.t.stats.bytesIn.Add(uint64(n))
		c.reads.Add(1)
	}
	return f, err
}

// readLoop is an accepted conn's reader goroutine.
func (c *conn) readLoop() {
	for {
		f, err := c.readFrame()
		if err == nil {
			err = c.dispatch(f)
		}
		if err != nil {
			c.readFailed(err)
			return
		}
	}
}

// dispatch acts on a frame read from the connection other than the
// answer its reader was waiting for.
func (c *conn) dispatch(f frame) error {
	switch {
	case c.dialer && (f.kind == kindResponse || f.kind == kindError):
		c.mu.Lock()
		answer := c.mu.pending[f.id]
		delete(c.mu.pending, f.id)
		c.mu.Unlock()
		if answer == nil {
			c.t.stats.lateAnswers.Add(1)
			return nil
		}
		answer <- f // buffered for exactly this answer
	case c.dialer && f.kind == kindPong:
		// Reading it was the point: see sweep.
	case !c.dialer && (f.kind == kindRequest || f.kind == kindSend):
		c.serve(f)
	case !c.dialer && f.kind == kindPing:
		c.enqueue(c.t.frameBuf(frame{kind: kindPong, id: f.id}))
	default:
		return fmt.Errorf("%w: kind %d is not expected on the %s side", errMalformed, f.kind, c.side())
	}
	return nil
}

func (c *conn) side() string {
	if c.dialer {
		return "dialing"
	}
	return "accepting"
}

func (c *conn) readFailed(err error) {
	if c.closed() {
		return // closed on purpose; the read error only echoes that
	}
	if errors.Is(err, errMalformed) || errors.Is(err, ErrFrameTooLarge) {
		c.t.stats.badFrames.Add(1)
		c.t.log.Warn("closing connection after a bad frame", "remote", c.addr, "err", err)
	}
	c.close(fmt.Errorf("%w: connection to %s: %w", ErrPeerUnreachable, c.addr, err))
}

// serve serves one request on the reader goroutine if it is alone (no
// other frame is already buffered behind it) and the handler can serve
// it without blocking; otherwise it hands it to a handler goroutine: an
// idle one, or a new one while fewer than MaxConcurrentRequests run.
// When that many are busy the reader waits here, which pushes back on
// the peer instead of queueing without bound.
func (c *conn) serve(req frame) {
	if c.t.inline != nil && c.fr.r.Buffered() == 0 {
		c.running.Add(1)
		body, ok, err := c.t.inline.TryServeRequest(c.ctx, c.peer, req.method, req.body)
		if ok {
			c.reply(req, body, err)
		}
		c.running.Add(-1)
		if ok {
			return
		}
	}
	for {
		select {
		case c.work <- req:
			return
		default:
		}
		if int(c.workers.Load()) < c.t.cfg.MaxConcurrentRequests {
			c.workers.Add(1)
			c.running.Add(1)
			c.t.wg.Go(func() { c.handle(req) })
			return
		}
		select {
		case c.work <- req:
			return
		case <-c.ended:
			// One ended (dismissed while idle): start another.
		case <-c.done:
			return
		}
	}
}

// handle serves req and then each request handed to it, until the
// connection closes or the janitor dismisses it while idle.
func (c *conn) handle(req frame) {
	for {
		body, err := c.t.handler.ServeRequest(c.ctx, c.peer, req.method, req.body)
		c.reply(req, body, err)
		c.running.Add(-1)
		select {
		case req = <-c.work:
			c.running.Add(1)
		case <-c.dismiss:
			c.workers.Add(-1)
			select {
			case c.ended <- struct{}{}:
			default: // a signal is pending already
			}
			return
		case <-c.done:
			return
		}
	}
}

// keepIdle is how many idle handlers a connection keeps: the janitor
// dismisses half of those beyond it at each look.
const keepIdle = 4

// dismissIdle ends half the idle handlers beyond keepIdle. Only those
// waiting for work take a token, so a busy one is never ended.
func (c *conn) dismissIdle() {
	idle := int(c.workers.Load() - c.running.Load())
	for range (idle - keepIdle + 1) / 2 {
		select {
		case c.dismiss <- struct{}{}:
		default:
			return // none waits: they are busy after all
		}
	}
}

// reply sends the answer to req: body, or err if not nil. Answers to
// Sends are dropped.
func (c *conn) reply(req frame, body []byte, err error) {
	if req.kind == kindSend {
		if err != nil {
			c.t.log.Debug("one-way request failed", "remote", c.addr, "method", req.method, "err", err)
		}
		return
	}
	answer := frame{kind: kindResponse, id: req.id, body: body}
	if err != nil {
		answer = frame{kind: kindError, id: req.id, body: appendRemoteError(nil, err)}
	}
	if n := frameSize(answer); n > c.peerMax {
		c.t.log.Warn("answer too large for the caller", "remote", c.addr, "method", req.method, "bytes", n, "limit", c.peerMax)
		err := fmt.Errorf("%w: answer of %d bytes, caller accepts %d", ErrFrameTooLarge, n, c.peerMax)
		answer = frame{kind: kindError, id: req.id, body: appendRemoteError(nil, err)}
	}
	c.enqueue(c.t.frameBuf(answer))
}

// enqueue sends b at once if the write side is free, or queues it for
// the writer.
func (c *conn) enqueue(b *[]byte) {
	if c.writeDirect(b) {
		return
	}
	select {
	case c.queue <- b:
	case <-c.done:
		c.t.putBuf(b)
	}
}

// writeDirect sends b from the calling goroutine when nothing else is
// being written or waits to be, and reports whether it took b (it did
// unless it returns false, and then the caller queues b). It never
// blocks: it makes one non-blocking write, and if the socket does not
// take the whole frame, it leaves the rest to the writer goroutine,
// which writes it before anything else. A failed write closes the
// connection, as in the writer.
func (c *conn) writeDirect(bp *[]byte) bool {
	if !c.direct || len(c.queue) > 0 || !c.wmu.TryLock() {
		return false
	}
	if c.rest != nil || len(c.queue) > 0 {
		c.wmu.Unlock()
		return false
	}
	b := c.prepare(bp)
	c.sockBuf = b
	err := c.sock.Write(c.sockFunc)
	n, werr := max(c.sockN, 0), c.sockErr
	c.sockBuf, c.sockErr = nil, nil
	if err == nil && werr != nil && werr != syscall.EAGAIN && werr != syscall.EINTR {
		err = werr
	}
	if err != nil {
		c.wmu.Unlock()
		c.t.putBuf(bp)
		c.writeFailed(err)
		return true // the caller sees the connection close
	}
	c.t.stats.framesOut.Add(1)
	c.t.stats.bytesOut.Add(uint64(len(b)))
	if n == len(b) {
		c.wmu.Unlock()
		c.t.putBuf(bp)
		return true
	}
	c.rest, c.restBuf = b[n:], bp
	c.wmu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default: // already kicked
	}
	return true
}

// retire makes a dialled conn take no more calls; the janitor closes it
// once the calls in flight are done. The caller has taken it out of
// t.mu.peers, so that the next call dials a new one.
func (c *conn) retire() {
	c.mu.Lock()
	c.mu.retired = true
	c.mu.Unlock()
}

// closeIfPeerGone closes this idle dialled connection, and reports so,
// if the peer closed it or it failed: a non-blocking look at the socket,
// taken only while nobody reads it. It cannot tell a TLS peer's close
// (which starts with an alert record) from a late answer; that close is
// noticed by the next call instead, which fails.
func (c *conn) closeIfPeerGone() bool {
	if !c.peerGone() {
		return false
	}
	c.close(fmt.Errorf("%w: %s closed the idle connection", ErrPeerUnreachable, c.addr))
	return true
}

// peerGone is closeIfPeerGone's look, without the close.
func (c *conn) peerGone() bool {
	if c.sock == nil {
		return false
	}
	select {
	case c.rtok <- struct{}{}:
	default:
		return false // a caller is reading: it will notice
	}
	defer func() { <-c.rtok }()
	if c.fr.r.Buffered() > 0 {
		return false // a late answer, read but not consumed
	}
	if c.interrupted.Swap(false) {
		_ = c.raw.SetReadDeadline(time.Time{}) // else the look fails at once
	}
	return peerClosed(c.sock)
}

// sockWrite is the one attempt of a direct write, run by c.sock.Write
// with the socket's descriptor. c.wmu is held.
func (c *conn) sockWrite(fd uintptr) bool {
	c.sockN, c.sockErr = writeFD(fd, c.sockBuf)
	return true // done, whatever happened: never wait for the socket
}

// writeLoop writes queued frames and flushes only when the queue is
// empty, so that under load many frames share one system call while a
// lone frame still goes out at once.
func (c *conn) writeLoop() {
	for {
		var b *[]byte
		select {
		case b = <-c.queue:
		case <-c.kick:
		case <-c.done:
			return
		}
		c.wmu.Lock()
		err := c.drain(b)
		c.wmu.Unlock()
		if err != nil {
			c.writeFailed(err)
			return
		}
	}
}

// drain writes the rest of a direct write, b if not nil, and whatever
// else is queued, then flushes. c.wmu is held.
func (c *conn) drain(b *[]byte) error {
	if c.rest != nil {
		_, err := c.bw.Write(c.rest)
		c.t.putBuf(c.restBuf)
		c.rest, c.restBuf = nil, nil
		if err != nil {
			if b != nil {
				c.t.putBuf(b)
			}
			return err
		}
	}
	for b != nil {
		if err := c.write(b); err != nil {
			return err
		}
		select {
		case b = <-c.queue:
		default:
			b = nil
		}
	}
	return c.bw.Flush()
}

// write prepares a frame and buffers it. c.wmu is held.
func (c *conn) write(bp *[]byte) error {
	b := c.prepare(bp)
	_, err := c.bw.Write(b)
	c.t.putBuf(bp)
	if err == nil {
		c.t.stats.framesOut.Add(1)
		c.t.stats.bytesOut.Add(uint64(len(b)))
	}
	return err
}

// prepare fills in the length and seals the frame if the connection uses
// a cluster key, and returns the bytes to write. It must be called under
// c.wmu, in the order in which frames go out.
func (c *conn) prepare(bp *[]byte) []byte {
	b := *bp
	if c.seal == nil {
		binary.BigEndian.PutUint32(b, uint32(len(b)-lengthSize))
		return b
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-lengthSize+c.seal.Overhead()))
	// frameBuf left room for the tag, so this seals in place.
	sealed := c.seal.Seal(b[lengthSize:lengthSize], putNonce(&c.iv, c.sealSeq), b[lengthSize:], b[:lengthSize])
	c.sealSeq++
	return b[:lengthSize+len(sealed)]
}

func (c *conn) writeFailed(err error) {
	c.close(fmt.Errorf("%w: connection to %s: %w", ErrPeerUnreachable, c.addr, err))
}

// sweep is the janitor's periodic look at c; tick is the time since the
// last one.
func (c *conn) sweep(tick time.Duration) {
	reads := c.reads.Load()
	defer func() { c.seenReads = reads }()
	if !c.dialer {
		c.dismissIdle()
		// The dialer closes idle connections; this reclaims the ones
		// whose dialer vanished, later, so as not to race its calls.
		if c.running.Load() > 0 || reads != c.seenReads {
			c.idleFor = 0
			return
		}
		c.idleFor += tick
		if c.idleFor >= 2*c.t.cfg.IdleTimeout {
			c.close(fmt.Errorf("transport: no request for %v", c.idleFor))
		}
		return
	}

	c.mu.Lock()
	pending, ids := len(c.mu.pending), c.mu.nextID
	if pending > 0 || ids != c.seenIDs {
		c.idleFor = 0
	} else {
		c.idleFor += tick
		c.mu.retired = c.mu.retired || c.idleFor >= c.t.cfg.IdleTimeout
	}
	// Closed only when no call waits and none started since the last
	// tick (a Send that passed the retired check just before it was
	// set), so that closing fails nothing.
	done := c.mu.retired && pending == 0 && ids == c.seenIDs
	c.mu.Unlock()
	c.seenIDs = ids
	if done {
		c.close(errRetired)
		return
	}
	// Nobody reads an idle connection: this is how a peer's close is
	// noticed between calls.
	if pending == 0 && c.closeIfPeerGone() {
		return
	}

	// Calls are waiting and nothing came back since the last tick: ask
	// the peer for a sign of life. A peer that vanished without closing
	// the connection (power loss, a dropped route) would otherwise hold
	// every call until its own deadline, and calls without one forever.
	if pending == 0 || reads != c.seenReads {
		c.silentTicks = 0
		return
	}
	c.silentTicks++
	if c.silentTicks == 1 {
		ping := c.t.frameBuf(frame{kind: kindPing})
		select {
		case c.queue <- ping:
		default:
			c.t.putBuf(ping) // the writer is stuck: the silence will tell
		}
		return
	}
	if silent := time.Duration(c.silentTicks-1) * tick; silent >= c.t.cfg.DialTimeout {
		c.close(fmt.Errorf("%w: %s did not answer a ping for %v", ErrPeerUnreachable, c.addr, silent))
	}
}
