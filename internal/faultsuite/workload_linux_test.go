package faultsuite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe/replication"
)

// Pacing of the workload's clients: a rate, not a wait for a condition.
// It keeps histories small enough for porcupine to check in seconds.
const (
	sessionPace   = 25 * time.Millisecond
	namingPace    = 100 * time.Millisecond
	pinPace       = 150 * time.Millisecond
	singletonPace = 200 * time.Millisecond
	// requestTimeout is above the node's own bound on a library call
	// (opTimeout in faultnode), so that the client normally hears the
	// node's answer rather than giving up first.
	requestTimeout = 5 * time.Second
)

// session is one replicated session under test: a register whose value
// clients overwrite with increasing numbers.
type session struct {
	idx  int
	next atomic.Int64 // the last value handed to a writer

	mu sync.Mutex
	id string // the newest id any node answered with
}

func (s *session) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// logRef is how the nodes' logs name the session: the first 8 hex digits
// of the SHA-256 of its key (see TROUPE_FAULT_LOGS).
func (s *session) logRef() string {
	rid, err := replication.ParseID(s.ID())
	if err != nil {
		return "?"
	}
	sum := sha256.Sum256([]byte(rid.Key))
	return hex.EncodeToString(sum[:4])
}

func (s *session) setID(id string) {
	if id == "" {
		return
	}
	s.mu.Lock()
	s.id = id
	s.mu.Unlock()
}

// workload drives sessions, names, pins and watches the singleton during
// one round.
type workload struct {
	c        *cluster
	epoch    time.Time // op timestamps are offsets from it
	round    int
	hist     *History
	sessions []*session

	pinTokens map[string]*TokenCheck
	singleton TokenCheck

	mu struct {
		sync.Mutex
		violations []string
		binds      [2]int // ok, failed
		pins       [2]int
		maxRunning int // most singleton instances seen at one poll
	}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (w *workload) now() time.Duration { return time.Since(w.epoch) }

func (w *workload) violation(format string, args ...any) {
	w.mu.Lock()
	w.mu.violations = append(w.mu.violations, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

// createSessions makes n sessions, each on some node that answers.
func (w *workload) createSessions(ctx context.Context, n int) error {
	for k := range n {
		s := &session{idx: k}
		err := poll(ctx, 100*time.Millisecond, func() error {
			var out struct{ ID string }
			_, err := w.c.callTimeout(requestTimeout, k%len(w.c.nodes), "POST", "/sessions", &out)
			s.setID(out.ID)
			return err
		})
		if err != nil {
			return fmt.Errorf("creating session %d: %w", k, err)
		}
		w.sessions = append(w.sessions, s)
	}
	return nil
}

// start starts the clients: two per session, one following the route
// and one sending each request to a random node; two naming clients, two
// pinning clients and the singleton watcher.
func (w *workload) start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.pinTokens = map[string]*TokenCheck{}
	for k := range 3 {
		w.pinTokens[fmt.Sprintf("fs/pin/k%d", k)] = &TokenCheck{}
	}
	client := 0
	for _, s := range w.sessions {
		for _, follow := range []bool{true, false} {
			id := client // the closure must not see later increments
			w.goRun(func() { w.sessionClient(ctx, id, s, follow) })
			client++
		}
	}
	for k := range 2 {
		w.goRun(func() { w.namingClient(ctx, k) })
		w.goRun(func() { w.pinClient(ctx) })
	}
	w.goRun(func() { w.watchSingleton(ctx) })
}

func (w *workload) goRun(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

// stop stops every client and waits for them.
func (w *workload) stop() {
	w.cancel()
	w.wg.Wait()
}

// pace waits d or until ctx ends; false when it ended.
func pace(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// routeOrder lists the nodes to try for a session: its primary, its
// secondary, then the others.
func (w *workload) routeOrder(id string) []int {
	var order []int
	if r, err := replication.ParseID(id); err == nil {
		for _, n := range []string{r.Primary, r.Secondary} {
			if i := w.c.index(n); i >= 0 {
				order = append(order, i)
			}
		}
	}
	for i := range w.c.nodes {
		if !containsInt(order, i) {
			order = append(order, i)
		}
	}
	return order
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// sessionClient reads and writes one session until ctx ends. A following
// client sends each request to the primary named by the newest id and,
// after an error, to the next node of the route; the other sends each
// request to a random node.
func (w *workload) sessionClient(ctx context.Context, client int, s *session, follow bool) {
	rng := rand.New(rand.NewPCG(uint64(w.round), uint64(client)))
	next := 0 // position in the route order after failures
	for pace(ctx, sessionPace) {
		id := s.ID()
		node := rng.IntN(len(w.c.nodes))
		if follow {
			order := w.routeOrder(id)
			node = order[next%len(order)]
		}
		op, ok := w.sessionOp(ctx, client, s, node, id, rng.IntN(2) == 0)
		if ok {
			w.hist.Add(op)
		}
		if op.Unknown || !ok {
			next++
		} else {
			next = 0
		}
	}
}

// sessionOp makes one read or write of s on node and returns it as an
// operation; ok is false for a read that got no answer (it says nothing
// about the register).
func (w *workload) sessionOp(ctx context.Context, client int, s *session, node int, id string, write bool) (Op, bool) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	op := Op{Client: client, Session: s.idx, Write: write, Node: w.c.nodes[node].name}
	var out struct {
		ID string
		V  int64
	}
	path := "/sessions/" + url.PathEscape(id)
	method := "GET"
	if write {
		op.Value = s.next.Add(1)
		path += fmt.Sprintf("?v=%d", op.Value)
		method = "PUT"
	}
	op.Call = w.now()
	status, err := w.c.call(rctx, node, method, path, &out)
	op.Return = w.now()
	switch {
	case err == nil:
		s.setID(out.ID)
		if !write {
			op.Value = out.V
		}
		return op, true
	case write:
		op.Unknown = true
		op.Note = shortErr(status, err)
		return op, true
	case status == 404:
		op.Value = Absent
		op.Note = "404"
		return op, true
	}
	return op, false
}

func shortErr(status int, err error) string {
	if status != 0 {
		return fmt.Sprint(status)
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// namingClient binds and unbinds names of its own on random nodes. The
// check is that every node ends with the same tree.
func (w *workload) namingClient(ctx context.Context, k int) {
	rng := rand.New(rand.NewPCG(uint64(w.round), uint64(1000+k)))
	type bound struct {
		name string
		node int
	}
	var names []bound
	seq := 0
	for pace(ctx, namingPace) {
		var err error
		if len(names) < 4 || rng.IntN(2) == 0 {
			seq++
			b := bound{fmt.Sprintf("fs/r%d/c%d/%d", w.round, k, seq), rng.IntN(len(w.c.nodes))}
			_, err = w.c.callTimeout(requestTimeout, b.node, "PUT", "/names/"+b.name+"?v="+fmt.Sprint(seq), nil)
			if err == nil {
				names = append(names, b)
			}
		} else {
			// Node-scoped bindings can only be removed by their node;
			// if it fails, the binding goes with it anyway.
			b := names[0]
			names = names[1:]
			_, err = w.c.callTimeout(requestTimeout, b.node, "DELETE", "/names/"+b.name, nil)
		}
		w.mu.Lock()
		if err == nil {
			w.mu.binds[0]++
		} else {
			w.mu.binds[1]++
		}
		w.mu.Unlock()
	}
}

// pinClient pins keys on random nodes and sometimes releases them on
// their owner, checking that a key never goes back to an older owner.
func (w *workload) pinClient(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(w.round), 2000))
	for pace(ctx, pinPace) {
		key := fmt.Sprintf("fs/pin/k%d", rng.IntN(len(w.pinTokens)))
		var out struct {
			Owner string
			Token uint64
		}
		call := w.now()
		node := rng.IntN(len(w.c.nodes))
		_, err := w.c.callTimeout(requestTimeout, node, "POST", "/pins/"+key, &out)
		ret := w.now()
		w.mu.Lock()
		if err == nil {
			w.mu.pins[0]++
		} else {
			w.mu.pins[1]++
		}
		w.mu.Unlock()
		if err != nil {
			continue
		}
		if msg := w.pinTokens[key].Observe(out.Owner, out.Token, call, ret, false); msg != "" {
			w.violation("pin %s: %s (answered by %s)", key, msg, w.c.nodes[node].name)
		}
		if rng.IntN(3) == 0 {
			if i := w.c.nodeByName(out.Owner); i >= 0 {
				_, _ = w.c.callTimeout(requestTimeout, i, "DELETE", "/pins/"+key, nil) // it may have moved meanwhile
			}
		}
	}
}

type singletonState struct {
	Running bool
	Token   uint64
	Starts  int
	Started int64 // Unix ns: the nodes run on this machine, on its clock
}

// singletonStates asks every node about its singleton instance; a node
// that does not answer counts as not running.
func (w *workload) singletonStates() []singletonState {
	states := make([]singletonState, len(w.c.nodes))
	var wg sync.WaitGroup
	for i := range w.c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = w.c.callTimeout(time.Second, i, "GET", "/singleton", &states[i])
		}()
	}
	wg.Wait()
	return states
}

// watchSingleton polls the nodes' singleton instances: every new
// instance must carry a larger token than every instance seen before it
// started (its start, not when a poll first saw it: an instance started
// just before its node was paused is seen only once it runs again). Two instances at once are allowed between a cut and failure
// detection (the package's documentation says so); after the heal the
// round checks that one remains.
func (w *workload) watchSingleton(ctx context.Context) {
	for pace(ctx, singletonPace) {
		call := w.now()
		states := w.singletonStates()
		ret := w.now()
		running := 0
		for i, st := range states {
			if !st.Running {
				continue
			}
			running++
			started := min(call, time.Unix(0, st.Started).Sub(w.epoch))
			if msg := w.singleton.Observe(w.c.nodes[i].name, st.Token, started, ret, true); msg != "" {
				w.violation("singleton: %s", msg)
			}
		}
		w.mu.Lock()
		w.mu.maxRunning = max(w.mu.maxRunning, running)
		w.mu.Unlock()
	}
}

func (c *cluster) nodeByName(name string) int {
	for i, p := range c.nodes {
		if p.name == name {
			return i
		}
	}
	return -1
}

// parseRoute returns the node id of a session id's primary.
func parseRoute(id string) (string, error) {
	r, err := replication.ParseID(id)
	return r.Primary, err
}
