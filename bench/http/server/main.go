// Command server is the application server of the HTTP benchmark
// (bench/http/run.sh): one handler, a counter in the client's session,
// with the session store chosen by -store, so that between the variants
// only the store differs.
//
//	-store troupe   Troupe's replicated sessions (ModeSync, cluster key;
//	                -async for ModeAsync, to measure what the wait costs)
//	-store memory   an unreplicated map under a mutex, in this process
//	-store scs      github.com/alexedwards/scs/v2 on Redis (redisstore),
//	                with WAIT 1 0 after every write (-redis-wait)
//
// Every variant is a full Troupe node of its own cluster that binds its
// URL under services/web, so that examples/proxy finds it the same way.
// With -store memory the session ids have Troupe's routed form
// (<key>!<node id>!none), so that the proxy's cookie policy sends each
// session to the worker that holds it, as it does for Troupe's; scs
// sessions live in Redis, which every worker reads, so the proxy sends
// them round robin.
//
// Endpoints: POST /counter adds one to the session's counter (creating
// the session when the request has none) and answers {"value":n}; GET
// /counter reads it and creates nothing. A POST with an Idempotency-Key
// header equal to the one of the session's last increment is answered
// without adding again, so that the proxy may retry it on another worker
// (the failover measurement sends one; the throughput measurements do
// not). Every answer names the node in X-Bench-Node and echoes the
// request's Cookie header in X-Bench-Cookie, for wrk's script.
//
//	go run ./server -store troupe -name w1 -bind 127.0.0.11:7946 -wka 127.0.0.11:7946 -http 127.0.0.11:8080 -key-file k
//
// It prints "ready" on stdout once the node has joined and bound its URL.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alexedwards/scs/redisstore"
	"github.com/alexedwards/scs/v2"
	"github.com/gomodule/redigo/redis"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication"
)

// Session attributes and headers of the application.
const (
	attrCounter = "counter"
	attrIdem    = "counter.idem"
	idemHeader  = "Idempotency-Key"
	nodeHeader  = "X-Bench-Node"
	// cookieHeader echoes the request's Cookie header (see echoCookie).
	cookieHeader = "X-Bench-Cookie"
)

// sessionTTL is how long every store keeps an idle session: Troupe's
// default IdleTimeout, given to scs as its Lifetime; the memory store
// keeps them for the life of the process.
const sessionTTL = 30 * time.Minute

func main() {
	storeName := flag.String("store", "troupe", "session store: `troupe|memory|scs`")
	name := flag.String("name", "", "node name (required)")
	cluster := flag.String("cluster", "bench", "cluster name")
	bind := flag.String("bind", "", "gossip ip:port (required); the transport takes the next port")
	wka := flag.String("wka", "", "well-known member ip:port (required; the first node lists itself)")
	httpAddr := flag.String("http", "", "HTTP ip:port to serve (required)")
	keyFile := flag.String("key-file", "", "file holding the cluster key in base64 (required)")
	service := flag.String("service", "services/web", "naming name to bind this node's URL under")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis primary ip:port, for -store scs")
	redisWait := flag.Bool("redis-wait", true, "with -store scs: WAIT 1 0 on the connection after every write, so that a replica holds it")
	pprofAddr := flag.String("pprof", "", "ip:port to serve net/http/pprof on (off if empty)")
	async := flag.Bool("async", false, "with -store troupe: ModeAsync (Save returns before the secondary answers) instead of ModeSync")
	flag.Parse()
	mode := replication.ModeSync
	if *async {
		if *storeName != "troupe" {
			log.Fatal("-async is for -store troupe")
		}
		mode = replication.ModeAsync
	}
	for f, v := range map[string]string{"-name": *name, "-bind": *bind, "-wka": *wka, "-http": *httpAddr, "-key-file": *keyFile} {
		if v == "" {
			log.Fatalf("%s is required", f)
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	text, err := os.ReadFile(*keyFile)
	if err != nil {
		log.Fatal(err)
	}
	key, err := membership.DecodeKey(strings.TrimSpace(string(text)))
	if err != nil {
		log.Fatal(err)
	}
	transport, err := nextPort(*bind)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	node, err := troupe.Start(startCtx, troupe.Config{
		Membership: membership.Config{
			ClusterName:   *cluster,
			NodeName:      *name,
			BindAddr:      *bind,
			TransportAddr: transport,
			WellKnown:     []string{*wka},
			SecretKeys:    [][]byte{key},
			Profile:       membership.ProfileLocal,
			Logger:        logger,
		},
		Sessions: replication.Options{
			Mode:        mode,
			MaxSessions: -1, // the create workload makes hundreds of thousands
			Logger:      logger,
		},
		HTTPAddr: *httpAddr,
		Services: []string{*service},
		Logger:   logger,
	})
	cancel()
	if err != nil {
		log.Fatal(err)
	}
	defer node.Shutdown()

	var st store
	switch *storeName {
	case "troupe":
		st = troupeStore{node.Sessions()}
	case "memory":
		st = newMemoryStore(node.Name())
	case "scs":
		st, err = newSCSStore(*redisAddr, *redisWait)
		if err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatalf("-store %q: want troupe, memory or scs", *storeName)
	}

	app := &app{node: node.Name(), store: st}
	mux := http.NewServeMux()
	mux.Handle("/counter", echoCookie(st.wrap(http.HandlerFunc(app.counter))))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	if *pprofAddr != "" {
		pm := http.NewServeMux()
		pm.HandleFunc("/debug/pprof/", pprof.Index)
		pm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { log.Print(http.ListenAndServe(*pprofAddr, pm)) }()
	}
	fmt.Println("ready", node.Name(), *storeName, node.URL())
	<-ctx.Done()
	_ = srv.Close()
}

// nextPort returns addr with its port plus one: the transport address.
func nextPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// app is the handler every variant runs.
type app struct {
	node  string
	store store
}

func (a *app) counter(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		return
	}
	s, err := a.store.session(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	v, err := s.getInt(attrCounter)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if r.Method == http.MethodPost {
		key := r.Header.Get(idemHeader)
		if key == "" || s.getString(attrIdem) != key {
			v++
			if err := s.setInt(attrCounter, v); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if key != "" {
				if err := s.setString(attrIdem, key); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
			}
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(nodeHeader, a.node)
	fmt.Fprintf(w, "{\"value\":%d}\n", v)
}

// echoCookie copies the request's Cookie header into X-Bench-Cookie, so
// that wrk's script (wrk.lua) learns which of its sessions a response
// belongs to.
func echoCookie(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := r.Header.Get("Cookie"); c != "" {
			w.Header().Set(cookieHeader, c)
		}
		h.ServeHTTP(w, r)
	})
}

// store is a session store: wrap is its middleware, session the
// request's session (which a read does not create).
type store interface {
	wrap(http.Handler) http.Handler
	session(w http.ResponseWriter, r *http.Request) (session, error)
}

type session interface {
	getInt(key string) (int64, error)
	setInt(key string, v int64) error
	getString(key string) string
	setString(key, v string) error
}

// troupeStore is Troupe's middleware: the session is loaded from its
// primary and saved, in ModeSync, on its secondary before the response
// leaves.
type troupeStore struct{ s *replication.Sessions }

func (t troupeStore) wrap(h http.Handler) http.Handler {
	return t.s.Middleware(replication.HTTPOptions{})(h)
}

func (t troupeStore) session(_ http.ResponseWriter, r *http.Request) (session, error) {
	s, err := replication.FromRequest(r)
	return troupeSession{s}, err
}

type troupeSession struct{ s *replication.Session }

func (t troupeSession) getInt(key string) (int64, error) {
	v, _, err := replication.GetValue[int64](t.s, key)
	return v, err
}
func (t troupeSession) setInt(key string, v int64) error { return replication.SetValue(t.s, key, v) }
func (t troupeSession) getString(key string) string {
	v, _, _ := replication.GetValue[string](t.s, key)
	return v
}
func (t troupeSession) setString(key, v string) error { return replication.SetValue(t.s, key, v) }

// memoryStore keeps sessions in a map under one mutex, in this process
// only: the unreplicated reference. Its cookie has Troupe's name and
// routed form, naming this node as the primary.
type memoryStore struct {
	route string // replication.NodeID of this node
	mu    struct {
		sync.Mutex
		m map[string]map[string]any
	}
}

func newMemoryStore(node string) *memoryStore {
	s := &memoryStore{route: replication.NodeID(node)}
	s.mu.m = map[string]map[string]any{}
	return s
}

func (m *memoryStore) wrap(h http.Handler) http.Handler { return h }

func (m *memoryStore) session(w http.ResponseWriter, r *http.Request) (session, error) {
	ms := &memorySession{m: m, w: w}
	if c, err := r.Cookie(replication.DefaultCookieName); err == nil {
		m.mu.Lock()
		if _, ok := m.mu.m[c.Value]; ok {
			ms.id = c.Value
		}
		m.mu.Unlock()
	}
	return ms, nil
}

// memorySession writes through to the map at once; the first write of a
// new session creates it and sets the cookie (before the handler writes
// its response).
type memorySession struct {
	m  *memoryStore
	w  http.ResponseWriter
	id string
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func (s *memorySession) get(key string) any {
	if s.id == "" {
		return nil
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.m.mu.m[s.id][key]
}

func (s *memorySession) set(key string, v any) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if attrs, ok := s.m.mu.m[s.id]; ok && s.id != "" {
		attrs[key] = v
		return
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	s.id = replication.ID{Key: b32.EncodeToString(k[:]), Primary: s.m.route}.String()
	s.m.mu.m[s.id] = map[string]any{key: v}
	http.SetCookie(s.w, &http.Cookie{Name: replication.DefaultCookieName, Value: s.id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

func (s *memorySession) getInt(key string) (int64, error) {
	v, _ := s.get(key).(int64)
	return v, nil
}
func (s *memorySession) setInt(key string, v int64) error { s.set(key, v); return nil }
func (s *memorySession) getString(key string) string {
	v, _ := s.get(key).(string)
	return v
}
func (s *memorySession) setString(key, v string) error { s.set(key, v); return nil }

// scsStore is scs's LoadAndSave middleware on redisstore: a GET per
// request that has a cookie, and MULTI SET PEXPIREAT EXEC per request
// that changed the session, committed before the response is written.
type scsStore struct{ sm *scs.SessionManager }

func newSCSStore(addr string, wait bool) (*scsStore, error) {
	pool := &redis.Pool{
		MaxIdle:     256,
		IdleTimeout: time.Minute,
		Dial: func() (redis.Conn, error) {
			c, err := redis.Dial("tcp", addr)
			if err != nil || !wait {
				return c, err
			}
			return waitConn{c}, nil
		},
	}
	c := pool.Get()
	defer c.Close()
	if _, err := c.Do("PING"); err != nil {
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	sm := scs.New()
	sm.Store = redisstore.New(pool)
	sm.Lifetime = sessionTTL
	return &scsStore{sm}, nil
}

func (s *scsStore) wrap(h http.Handler) http.Handler { return s.sm.LoadAndSave(h) }

func (s *scsStore) session(_ http.ResponseWriter, r *http.Request) (session, error) {
	return scsSession{s.sm, r.Context()}, nil
}

type scsSession struct {
	sm  *scs.SessionManager
	ctx context.Context
}

func (s scsSession) getInt(key string) (int64, error) { return s.sm.GetInt64(s.ctx, key), nil }
func (s scsSession) setInt(key string, v int64) error { s.sm.Put(s.ctx, key, v); return nil }
func (s scsSession) getString(key string) string      { return s.sm.GetString(s.ctx, key) }
func (s scsSession) setString(key, v string) error    { s.sm.Put(s.ctx, key, v); return nil }

// waitConn sends WAIT 1 0 after every EXEC (redisstore's Commit ends its
// MULTI with one), on the same connection and in the same write, so that
// a commit returns only once a replica holds it: the guarantee Troupe's
// ModeSync gives. WAIT counts the replicas that acknowledged this
// connection's writes, which is why it cannot be sent on another one.
type waitConn struct{ redis.Conn }

// errNoReplica is returned when WAIT reports no replica.
var errNoReplica = errors.New("redis: WAIT 1 0: no replica acknowledged the write")

func (c waitConn) Do(cmd string, args ...any) (any, error) {
	if !strings.EqualFold(cmd, "EXEC") {
		return c.Conn.Do(cmd, args...)
	}
	if err := c.Conn.Send("EXEC"); err != nil {
		return nil, err
	}
	// Do flushes, reads every pending reply (MULTI's, the QUEUED ones,
	// EXEC's) and returns the last, WAIT's, or the first error reply.
	n, err := redis.Int(c.Conn.Do("WAIT", 1, 0))
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, errNoReplica
	}
	return "OK", nil
}
