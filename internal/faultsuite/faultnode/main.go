// Command faultnode runs one Troupe node for the fault suite (package
// internal/faultsuite) and exposes the node's sessions, naming tree, pins
// and a singleton over a small HTTP API, so that a test in another process
// can drive a workload against it while it kills, pauses and cuts off
// such processes.
//
//	faultnode -cluster fs -name n1 -bind 10.213.0.11:7946 -http 10.213.0.11:8080 \
//	    -join 10.213.0.11:7946,10.213.0.12:7946 -key-file cluster.key
//
// The cluster key comes from -key-file or, without it, from the
// environment variable TROUPE_CLUSTER_KEY (base64, as membership.DecodeKey
// reads it). There is no insecure mode: the suite tests the configuration
// that production runs.
//
// The API (all answers are JSON unless noted):
//
//	GET    /ready               200 once the node joined and can place secondaries
//	GET    /members             live members as this node sees them
//	POST   /sessions            create a session with v=0; {"id": ...}
//	GET    /sessions/{id}       {"id": current id, "v": value}; 404, 503, 500
//	PUT    /sessions/{id}?v=N   Get, Set("v"), Save; 200 only if Save returned nil
//	PUT    /names/{name...}?v=  Bind (node scope) with value v
//	DELETE /names/{name...}     Unbind
//	GET    /digest              hash over every name, scope and offer in the tree
//	                            (?lines: and the lines hashed, one per name)
//	POST   /pins/{key...}       Pin; {"owner", "token"}
//	DELETE /pins/{key...}       Release
//	GET    /singleton           {"running", "token", "starts", "started"} of this node's
//	                            instance (started: Unix ns, on the machine's clock)
//	GET    /debug               goroutines and heap after a GC
//	GET    /debug/goroutines    the goroutines' stacks, grouped (text)
//
// SIGTERM (or SIGINT) makes the node Leave and exit; SIGKILL is a crash.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/internal/clusterkey"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication"
	"github.com/troupe-go/troupe/replication/pins"
)

// SingletonName is the singleton service every faultnode registers.
const SingletonName = "faultsuite/singleton"

func main() {
	var (
		cluster = flag.String("cluster", "faultsuite", "cluster name")
		name    = flag.String("name", "", "node name, unique in the cluster (required)")
		bind    = flag.String("bind", "", "membership address, ip:port (required)")
		join    = flag.String("join", "", "comma-separated membership addresses of the well-known members")
		httpAt  = flag.String("http", "", "HTTP address of the API, ip:port (required)")
		keyFile = flag.String("key-file", "", "file with the cluster key in base64 (default: $TROUPE_CLUSTER_KEY)")
		profile = flag.String("profile", "local", "membership timing profile: local or lan")
		debug   = flag.Bool("debug", false, "log at Debug level")
	)
	flag.Parse()
	if *name == "" || *bind == "" || *httpAt == "" {
		flag.Usage()
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", *name)

	key, err := clusterkey.Load(*keyFile)
	if err != nil {
		logger.Error("cluster key", "err", err)
		os.Exit(1)
	}
	prof := membership.ProfileLocal
	if *profile == "lan" {
		prof = membership.ProfileLAN
	}
	var wellKnown []string
	if *join != "" {
		wellKnown = strings.Split(*join, ",")
	}
	cfg := troupe.Config{
		Membership: membership.Config{
			ClusterName: *cluster,
			NodeName:    *name,
			BindAddr:    *bind,
			WellKnown:   wellKnown,
			SecretKeys:  [][]byte{key},
			Profile:     prof,
			// Every node is in the well-known list, so a restarted node
			// may come up before the others: it must not fail then.
			JoinTimeout: -1,
		},
		HTTPAddr: *httpAt,
		Logger:   logger,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger); err != nil {
		logger.Error("faultnode", "err", err)
		os.Exit(1)
	}
}

// run starts the node and serves the API until ctx ends, then leaves.
func run(ctx context.Context, cfg troupe.Config, logger *slog.Logger) error {
	// Listen before Start: a port in use should fail before the node joins.
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	defer ln.Close()

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := troupe.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer node.Shutdown()

	a := &api{node: node, log: logger}
	// The registration lives as long as the node, not ctx: Leave hands
	// the singleton over at once on SIGTERM.
	if _, err := node.Pins().RunSingleton(context.WithoutCancel(ctx), SingletonName, a.singleton); err != nil {
		return err
	}
	// Readiness in the background: the API answers (503 on /ready) at once,
	// so that the test sees a process that is up but not yet joined.
	readyCtx, cancelReady := context.WithCancel(ctx)
	defer cancelReady()
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		if err := node.Sessions().WaitPeers(readyCtx, 1); err == nil {
			a.ready.Store(true)
			logger.Info("ready")
		}
	}()

	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		cancelReady()
		<-readyDone
		return err
	case <-ctx.Done():
	}
	cancelReady()
	<-readyDone
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = node.Leave(stopCtx)
	if e := srv.Shutdown(stopCtx); e != nil {
		err = errors.Join(err, e)
	}
	<-serveErr
	logger.Info("left", "err", err)
	return err
}

// api serves the workload's requests on one node.
type api struct {
	node  *troupe.Node
	log   *slog.Logger
	ready atomic.Bool

	mu struct {
		sync.Mutex
		running bool
		token   uint64
		starts  int
		started time.Time // when the running instance started
	}
}

// singleton is the singleton's body: it only records that it runs, so
// that the test can count running instances and compare their tokens.
func (a *api) singleton(ctx context.Context, token uint64) {
	a.mu.Lock()
	a.mu.running, a.mu.token, a.mu.started = true, token, time.Now()
	a.mu.starts++
	a.mu.Unlock()
	a.log.Info("singleton started", "token", token)
	<-ctx.Done()
	a.mu.Lock()
	a.mu.running = false
	a.mu.Unlock()
	a.log.Info("singleton stopped", "token", token)
}

// opTimeout bounds one library call made for a request. The test's
// client gives up a little later, so that it normally hears the answer.
const opTimeout = 4 * time.Second

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, map[string]string{"node": a.node.Name()})
	})
	mux.HandleFunc("GET /members", func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for _, m := range a.node.Cluster().Members() {
			if m.State == membership.StateAlive {
				names = append(names, m.Name)
			}
		}
		writeJSON(w, map[string]any{"members": names})
	})
	mux.HandleFunc("POST /sessions", a.createSession)
	mux.HandleFunc("GET /sessions/{id}", a.readSession)
	mux.HandleFunc("PUT /sessions/{id}", a.writeSession)
	mux.HandleFunc("PUT /names/{name...}", a.bind)
	mux.HandleFunc("DELETE /names/{name...}", a.unbind)
	mux.HandleFunc("GET /digest", a.digest)
	mux.HandleFunc("POST /pins/{key...}", a.pin)
	mux.HandleFunc("DELETE /pins/{key...}", a.release)
	mux.HandleFunc("GET /singleton", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		writeJSON(w, map[string]any{"running": a.mu.running, "token": a.mu.token, "starts": a.mu.starts,
			"started": a.mu.started.UnixNano()})
	})
	mux.HandleFunc("GET /debug/goroutines", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_ = pprof.Lookup("goroutine").WriteTo(w, 1) // grouped by stack, with counts
	})
	mux.HandleFunc("GET /debug", func(w http.ResponseWriter, r *http.Request) {
		// After a GC, so that HeapAlloc is live memory rather than garbage.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		writeJSON(w, map[string]any{
			"pid":        os.Getpid(),
			"goroutines": runtime.NumGoroutine(),
			"heap_alloc": ms.HeapAlloc,
			"heap_inuse": ms.HeapInuse,
			"naming":     a.node.Names().Stats(),
		})
	})
	return mux
}

func (a *api) createSession(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	s, err := a.node.Sessions().Create(ctx)
	if err != nil {
		sessionError(w, err)
		return
	}
	if err := s.Set("v", []byte("0")); err != nil {
		sessionError(w, err)
		return
	}
	if err := a.node.Sessions().Save(ctx, s); err != nil {
		sessionError(w, err)
		return
	}
	writeJSON(w, map[string]string{"id": s.ID()})
}

func (a *api) readSession(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	s, err := a.node.Sessions().Get(ctx, r.PathValue("id"))
	if err != nil {
		sessionError(w, err)
		return
	}
	v, ok := s.Get("v")
	if !ok {
		http.Error(w, "session has no attribute v", http.StatusInternalServerError)
		return
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		http.Error(w, "attribute v: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"id": s.ID(), "v": n})
}

func (a *api) writeSession(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("v"), 10, 64)
	if err != nil {
		http.Error(w, "v: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	s, err := a.node.Sessions().Get(ctx, r.PathValue("id"))
	if err != nil {
		sessionError(w, err)
		return
	}
	if err := s.Set("v", []byte(strconv.FormatInt(n, 10))); err != nil {
		sessionError(w, err)
		return
	}
	if err := a.node.Sessions().Save(ctx, s); err != nil {
		sessionError(w, err)
		return
	}
	writeJSON(w, map[string]any{"id": s.ID(), "v": n})
}

// sessionError maps the replication errors to status codes the client
// can tell apart: 404 says the session is gone, 503 that it may come
// back, 409 that the handle was stale (nothing saved).
func sessionError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, replication.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, replication.ErrInvalidID):
		code = http.StatusBadRequest
	case errors.Is(err, replication.ErrStale):
		code = http.StatusConflict
	case errors.Is(err, replication.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	http.Error(w, err.Error(), code)
}

func (a *api) bind(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	err := a.node.Names().Bind(ctx, r.PathValue("name"), []byte(r.URL.Query().Get("v")))
	namingAnswer(w, err)
}

func (a *api) unbind(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	namingAnswer(w, a.node.Names().Unbind(ctx, r.PathValue("name")))
}

func namingAnswer(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		writeJSON(w, map[string]string{})
	case errors.Is(err, naming.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case errors.Is(err, naming.ErrNameBound):
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// digest hashes this node's copy of the whole naming tree: every bound
// name with its scope and its offers (node, value, claim), in List's
// order. Equal digests on two nodes mean equal trees.
func (a *api) digest(w http.ResponseWriter, r *http.Request) {
	var lines strings.Builder
	n := 0
	var walk func(prefix string) error
	walk = func(prefix string) error {
		children, err := a.node.Names().List(prefix)
		if err != nil {
			return err
		}
		for _, c := range children {
			if c.Bound {
				n++
				b := c.Binding
				fmt.Fprintf(&lines, "%q %d %t", b.Name, b.Scope, b.Clusterable)
				for _, o := range b.Offers {
					fmt.Fprintf(&lines, " [%q %q %d]", o.Node, o.Value, o.Claimed)
				}
				lines.WriteByte('\n')
			}
			if c.Context {
				if err := walk(c.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sum := sha256.Sum256([]byte(lines.String()))
	out := map[string]any{"digest": hex.EncodeToString(sum[:]), "names": n}
	if r.URL.Query().Has("lines") {
		out["lines"] = strings.Split(strings.TrimSuffix(lines.String(), "\n"), "\n")
	}
	writeJSON(w, out)
}

func (a *api) pin(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	p, err := a.node.Pins().Pin(ctx, r.PathValue("key"))
	switch {
	case err == nil:
		writeJSON(w, map[string]any{"owner": p.Owner, "token": p.Token})
	case errors.Is(err, pins.ErrNoQuorum), errors.Is(err, pins.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func (a *api) release(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	err := a.node.Pins().Release(ctx, r.PathValue("key"))
	switch {
	case err == nil:
		writeJSON(w, map[string]string{})
	case errors.Is(err, pins.ErrNotOwner):
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // the client sees a cut body as an error
}
