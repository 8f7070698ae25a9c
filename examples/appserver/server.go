package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/replication"
)

// nodeHeader names, in every response, the node that served it.
const nodeHeader = "X-Troupe-Node"

// statusPath is where every node serves its status, outside the session
// middleware; the console reads it from each member.
const statusPath = "/_troupe/status"

// Lifecycle states of a server, for /readyz.
const (
	stateStarting int32 = iota
	stateReady
	stateLeaving
)

var stateNames = [...]string{stateStarting: "starting", stateReady: "ready", stateLeaving: "leaving"}

// server is a node's HTTP handler. It serves /healthz and /readyz from
// the start; the rest (the application or the console) once the node has
// started.
type server struct {
	o     options
	name  string
	log   *slog.Logger
	since time.Time

	state atomic.Int32
	node  atomic.Pointer[troupe.Node]
	app   atomic.Pointer[http.Handler]
}

func newServer(o options, name string, log *slog.Logger) *server {
	return &server{o: o, name: name, log: log, since: time.Now()}
}

// started makes the node's handlers live and the node ready. The
// manager's console follows membership in a goroutine tracked by wg,
// which ends when the node shuts down.
func (s *server) started(node *troupe.Node, wg *sync.WaitGroup) error {
	s.node.Store(node)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+statusPath, s.serveStatus)
	metrics, err := metricsHandler(node)
	if err != nil {
		return err
	}
	mux.Handle("GET /metrics", metrics)
	switch s.o.role {
	case roleManager:
		c, err := newConsole(s, node, wg)
		if err != nil {
			return err
		}
		c.routes(mux)
	case roleWorker:
		a := &app{node: s.name, log: s.log}
		mw := node.Sessions().Middleware(replication.HTTPOptions{Error: a.sessionError})
		mux.Handle("/", mw(a.routes()))
	}
	var h http.Handler = mux
	s.app.Store(&h)
	s.state.Store(stateReady)
	return nil
}

// leaving makes /readyz answer 503: the node is about to leave.
func (s *server) leaving() { s.state.Store(stateLeaving) }

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(nodeHeader, s.name)
	switch r.URL.Path {
	case "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
		return
	case "/readyz":
		st := s.state.Load()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if st != stateReady {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte(stateNames[st] + "\n"))
		return
	}
	h := s.app.Load()
	if h == nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "starting: the node has not joined the cluster yet", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

// nodeStatus is what GET /_troupe/status answers: this node as the
// console shows it.
type nodeStatus struct {
	Name      string       `json:"name"`
	Role      string       `json:"role"`
	Group     string       `json:"group"`
	Weight    int          `json:"weight"`
	URL       string       `json:"url"`
	Cluster   string       `json:"cluster"`
	Gossip    string       `json:"gossip"`
	Transport string       `json:"transport"`
	State     string       `json:"state"` // starting, ready or leaving
	Services  []string     `json:"services"`
	Members   int          `json:"members"` // alive members this node sees, itself included
	Peers     []string     `json:"peers"`   // the other nodes holding sessions that it sees
	Sessions  sessionStats `json:"sessions"`
	Bindings  int          `json:"bindings"` // names in its copy of the naming tree
	Started   time.Time    `json:"started"`
	PID       int          `json:"pid"`
	GoVersion string       `json:"goVersion"`
}

// sessionStats is replication.Stats in JSON.
type sessionStats struct {
	Primaries   int    `json:"primaries"`
	Secondaries int    `json:"secondaries"`
	Created     uint64 `json:"created"`
	Saves       uint64 `json:"saves"`
	FullCopies  uint64 `json:"fullCopies"`
	Takeovers   uint64 `json:"takeovers"`
	Promotions  uint64 `json:"promotions"`
	Rehomes     uint64 `json:"rehomes"`
	Expired     uint64 `json:"expired"`
	Invalidated uint64 `json:"invalidated"`
	StaleDrops  uint64 `json:"staleDrops"`
	Refused     uint64 `json:"refused"`
}

func toSessionStats(st replication.Stats) sessionStats {
	return sessionStats{
		Primaries: st.Primaries, Secondaries: st.Secondaries, Created: st.Created, Saves: st.Saves,
		FullCopies: st.FullCopies, Takeovers: st.Takeovers, Promotions: st.Promotions, Rehomes: st.Rehomes,
		Expired: st.Expired, Invalidated: st.Invalidated, StaleDrops: st.StaleDrops, Refused: st.Refused,
	}
}

// status reports this node; node is set (the status is served once the
// node has started).
func (s *server) status() nodeStatus {
	node := s.node.Load()
	c := node.Cluster()
	self := c.LocalMember()
	st := nodeStatus{
		Name:      node.Name(),
		Role:      self.Role,
		Group:     self.Group,
		Weight:    self.Weight,
		URL:       node.URL(),
		Cluster:   c.ClusterName(),
		Gossip:    c.Addr(),
		Transport: c.TransportAddr(),
		State:     stateNames[s.state.Load()],
		Services:  s.o.services(),
		Members:   c.NumMembers(),
		Bindings:  node.Names().Len(),
		Started:   s.since.UTC(),
		PID:       os.Getpid(),
		GoVersion: runtime.Version(),
	}
	if ss := node.Sessions(); ss != nil {
		st.Peers = ss.Peers()
		st.Sessions = toSessionStats(ss.Stats())
	}
	if st.Peers == nil {
		st.Peers = []string{}
	}
	return st
}

func (s *server) serveStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.status())
}

// writeJSON answers v as JSON with the given status.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client went away: nothing to do
}
