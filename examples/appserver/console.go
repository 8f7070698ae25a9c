package main

import (
	"cmp"
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication/pins"
)

// Console limits.
const (
	// statusTimeout bounds the request for one member's status: a member
	// that does not answer within it shows as unreachable.
	statusTimeout = 1500 * time.Millisecond
	// maxStatusBody bounds a member's status answer.
	maxStatusBody = 1 << 20
	// maxBindings bounds the bindings listed under one prefix, and the
	// pins and singletons listed.
	maxBindings = 1000
	// maxDeparted bounds the departed members remembered, and
	// departedFor how long one is.
	maxDeparted = 64
	departedFor = time.Hour
	// maxValueShown is how much of a binding's value the console shows.
	maxValueShown = 200
)

// singletonsPrefix is where singletons are pinned: Prefix/singletons/name
// is the pin of the node that runs name, and Prefix/singletons/name/nodes
// the clusterable offers of the nodes registered to run it.
var singletonsPrefix = pins.DefaultPrefix + "/" + pins.SingletonKey("")

//go:embed console.html
var consoleHTML string

var consoleTemplate = template.Must(template.New("console").Parse(consoleHTML))

// console is the manager's view of the cluster: HTML at /console/ and
// JSON at /console/api/state, built on each request from this node's
// copies of the member list and the naming tree, and from each member's
// /_troupe/status.
//
// The page keeps these ids and classes stable, for browser tests and
// scrapers (every row also has a td per column, classed by its name):
//
//	main#state                        what the page refreshes every 2 s
//	table#members  tr.member          data-name, data-role, data-state (alive), data-health (alive|suspect)
//	table#departed tr.departed        data-name, data-role, data-state (left|failed); only when some departed
//	table#nodes    tr.node            data-name, data-reachable (true|false); td.primaries, td.secondaries
//	ul#contexts    li.context         data-name: a child context of the prefix, linked with ?prefix=
//	table#bindings tr.binding         data-name, data-scope (node|cluster), data-clusterable
//	               li.offer           data-node, data-token (in ul.offers of its binding)
//	table#pins     tr.pin             data-key, data-owner, data-token
//	table#singletons tr.singleton     data-name, data-owner ("" while none), data-token
//	#refresh-status                   says when the last refresh failed
//
// A member that fails or leaves goes from #members to #departed; its
// offers leave #bindings.
type console struct {
	s      *server
	node   *troupe.Node
	client *http.Client

	mu struct {
		sync.Mutex
		departed map[string]departure // members that left or failed, by name
	}
}

// departure is a member that left or failed, as last seen.
type departure struct {
	m     membership.Member
	state string // left or failed
	at    time.Time
}

// newConsole starts following membership, to remember departed members,
// in a goroutine tracked by wg that ends when the node shuts down.
func newConsole(s *server, node *troupe.Node, wg *sync.WaitGroup) (*console, error) {
	roots, err := s.o.PeerRoots()
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.Proxy = nil // members are reached directly
	tr.MaxIdleConnsPerHost = 2
	c := &console{s: s, node: node, client: &http.Client{Transport: tr, Timeout: statusTimeout}}
	c.mu.departed = map[string]departure{}
	sub := node.Cluster().Subscribe()
	wg.Go(func() {
		defer tr.CloseIdleConnections()
		for ev := range sub.Events() {
			c.note(ev)
		}
	})
	return c, nil
}

// note records a member event.
func (c *console) note(ev membership.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Type {
	case membership.EventJoin, membership.EventUpdate:
		delete(c.mu.departed, ev.Member.Name)
	case membership.EventLeave, membership.EventFail:
		state := "left"
		if ev.Type == membership.EventFail {
			state = "failed"
		}
		c.mu.departed[ev.Member.Name] = departure{m: ev.Member, state: state, at: time.Now()}
		for len(c.mu.departed) > maxDeparted {
			oldest := ""
			for name, d := range c.mu.departed {
				if oldest == "" || d.at.Before(c.mu.departed[oldest].at) {
					oldest = name
				}
			}
			delete(c.mu.departed, oldest)
		}
	}
}

func (c *console) routes(mux *http.ServeMux) {
	mux.Handle("GET /{$}", http.RedirectHandler("/console/", http.StatusFound))
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusFound))
	mux.HandleFunc("GET /console/{$}", c.serveHTML)
	mux.HandleFunc("GET /console/api/state", c.serveJSON)
}

// consoleState is what the console shows, and /console/api/state
// answers.
type consoleState struct {
	Cluster string    `json:"cluster"`
	Node    string    `json:"node"` // the manager that answered
	Time    time.Time `json:"time"`

	// Members are the live members, sorted by name; Departed those that
	// left or failed recently (within an hour, the last 64).
	Members  []memberView `json:"members"`
	Departed []memberView `json:"departed"`

	// Nodes are the live members' status: sessions and secondaries.
	Nodes []nodeView `json:"nodes"`

	// Prefix is the naming context shown (?prefix=, "" for the root);
	// Contexts its child contexts; Bindings every name bound at or below
	// it, sorted (at most 1000: Truncated).
	Prefix    string        `json:"prefix"`
	Crumbs    []crumb       `json:"-"`
	Contexts  []string      `json:"contexts"`
	Bindings  []bindingView `json:"bindings"`
	Truncated bool          `json:"truncated"`
	Error     string        `json:"error,omitempty"` // a bad prefix

	Pins       []pinView       `json:"pins"`
	Singletons []singletonView `json:"singletons"`
}

// memberView is one member. State is membership's (alive, left,
// failed); Health refines alive into alive or suspect (failure detection
// suspects it: it missed its probes).
type memberView struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Group     string    `json:"group"`
	Weight    int       `json:"weight"`
	State     string    `json:"state"`
	Health    string    `json:"health"`
	Addr      string    `json:"addr"`
	Transport string    `json:"transport"`
	HTTP      string    `json:"http"`           // its HTTP address (the pins.DefaultHTTPTag tag), "" if none
	Since     time.Time `json:"since,omitzero"` // when it departed
}

// nodeView is one live member's status, as it answered it.
type nodeView struct {
	Name      string      `json:"name"`
	Role      string      `json:"role"`
	Reachable bool        `json:"reachable"`
	Error     string      `json:"error,omitempty"`
	Status    *nodeStatus `json:"status,omitempty"`
}

type bindingView struct {
	Name        string      `json:"name"`
	Scope       string      `json:"scope"`
	Clusterable bool        `json:"clusterable"`
	Offers      []offerView `json:"offers"`
}

type offerView struct {
	Node  string `json:"node"`
	Value string `json:"value"`
	Token uint64 `json:"token"` // the offer's Claimed time, a fencing token
}

type pinView struct {
	Key   string `json:"key"`
	Owner string `json:"owner"`
	Token uint64 `json:"token"`
}

type singletonView struct {
	Name  string   `json:"name"`
	Owner string   `json:"owner"` // "" while none runs it
	Token uint64   `json:"token"`
	Nodes []string `json:"nodes"` // the nodes registered to run it
}

// crumb is one link of the prefix's path.
type crumb struct{ Name, Prefix string }

// state builds the console's state.
func (c *console) state(ctx context.Context, prefix string) consoleState {
	cl := c.node.Cluster()
	st := consoleState{Cluster: cl.ClusterName(), Node: c.node.Name(), Time: time.Now().UTC()}
	st.Members, st.Departed = c.members()
	st.Nodes = c.nodes(ctx, cl.Members())
	c.naming(&st, prefix)
	st.Pins, st.Singletons = c.pins()
	return st
}

func (c *console) members() (live, departed []memberView) {
	cl := c.node.Cluster()
	suspects := cl.Suspects()
	live = []memberView{}
	alive := map[string]bool{}
	for _, m := range cl.Members() {
		v := viewMember(m)
		if slices.Contains(suspects, m.Name) {
			v.Health = "suspect"
		}
		live = append(live, v)
		alive[m.Name] = true
	}
	departed = []memberView{}
	c.mu.Lock()
	for name, d := range c.mu.departed {
		if alive[name] || time.Since(d.at) > departedFor {
			continue
		}
		v := viewMember(d.m)
		v.State, v.Health, v.Since = d.state, d.state, d.at.UTC()
		departed = append(departed, v)
	}
	c.mu.Unlock()
	slices.SortFunc(departed, func(a, b memberView) int { return b.Since.Compare(a.Since) })
	return live, departed
}

func viewMember(m membership.Member) memberView {
	return memberView{
		Name: m.Name, Role: m.Role, Group: m.Group, Weight: m.Weight,
		State: m.State.String(), Health: m.State.String(),
		Addr: m.Addr, Transport: m.TransportAddr, HTTP: m.Tag(pins.DefaultHTTPTag),
	}
}

// nodes asks every member for its status at once, each within
// statusTimeout.
func (c *console) nodes(ctx context.Context, members []membership.Member) []nodeView {
	out := make([]nodeView, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		out[i] = nodeView{Name: m.Name, Role: m.Role}
		if m.Name == c.node.Name() {
			st := c.s.status()
			out[i].Reachable, out[i].Status = true, &st
			continue
		}
		wg.Go(func() {
			st, err := c.fetchStatus(ctx, m)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].Reachable, out[i].Status = true, st
		})
	}
	wg.Wait()
	return out
}

// fetchStatus asks member m for its /_troupe/status, at the HTTP address
// it publishes.
func (c *console) fetchStatus(ctx context.Context, m membership.Member) (*nodeStatus, error) {
	addr := m.Tag(pins.DefaultHTTPTag)
	if addr == "" {
		return nil, errors.New("no HTTP address published")
	}
	scheme := "http"
	if m.Tag(httpsTag) == "true" {
		scheme = "https"
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+statusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("unreachable: %s answered %s", addr, resp.Status)
	}
	var st nodeStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatusBody)).Decode(&st); err != nil {
		return nil, fmt.Errorf("bad status from %s: %w", addr, err)
	}
	return &st, nil
}

// naming fills in the naming section for prefix.
func (c *console) naming(st *consoleState, prefix string) {
	st.Prefix = strings.Trim(prefix, "/")
	st.Contexts, st.Bindings = []string{}, []bindingView{}
	children, err := c.node.Names().List(st.Prefix)
	if err != nil {
		st.Error = err.Error()
		return
	}
	parts := strings.Split(st.Prefix, "/")
	for i := range parts {
		if st.Prefix != "" {
			st.Crumbs = append(st.Crumbs, crumb{Name: parts[i], Prefix: strings.Join(parts[:i+1], "/")})
		}
	}
	for _, ch := range children {
		if ch.Context {
			st.Contexts = append(st.Contexts, ch.Name)
		}
	}
	// The prefix itself may be bound too.
	if b, err := c.node.Names().Lookup(st.Prefix); st.Prefix != "" && err == nil {
		st.Bindings = append(st.Bindings, viewBinding(b))
	}
	bound, truncated := walk(c.node.Names(), st.Prefix, maxBindings-len(st.Bindings))
	for _, b := range bound {
		st.Bindings = append(st.Bindings, viewBinding(b))
	}
	st.Truncated = truncated
}

// walk returns the bindings below prefix in name order, depth first, at
// most limit of them.
func walk(t *naming.Tree, prefix string, limit int) (out []naming.Binding, truncated bool) {
	var visit func(p string) bool
	visit = func(p string) bool {
		children, err := t.List(p)
		if err != nil {
			return true // gone meanwhile
		}
		for _, ch := range children {
			if ch.Bound {
				if len(out) == limit {
					return false
				}
				out = append(out, ch.Binding)
			}
			if ch.Context && !visit(ch.Name) {
				return false
			}
		}
		return true
	}
	truncated = !visit(prefix)
	return out, truncated
}

func viewBinding(b naming.Binding) bindingView {
	v := bindingView{Name: b.Name, Scope: b.Scope.String(), Clusterable: b.Clusterable, Offers: []offerView{}}
	for _, of := range b.Offers {
		v.Offers = append(v.Offers, offerView{Node: of.Node, Value: showValue(of.Value), Token: of.Claimed})
	}
	return v
}

// showValue shows a binding's value: its text if it is short printable
// UTF-8, otherwise its size.
func showValue(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) <= maxValueShown && utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return !unicode.IsPrint(r) }) {
		return string(b)
	}
	return fmt.Sprintf("(%d bytes)", len(b))
}

// pins lists the pins and singletons from the naming tree: a pin of key
// k is the node-scoped binding pins.DefaultPrefix/k, whose one offer
// names the owner, with the fencing token in its Claimed time.
func (c *console) pins() (pinned []pinView, singletons []singletonView) {
	pinned, singletons = []pinView{}, []singletonView{}
	bound, _ := walk(c.node.Names(), pins.DefaultPrefix, maxBindings)
	byName := map[string]int{}
	single := func(name string) *singletonView {
		i, ok := byName[name]
		if !ok {
			i = len(singletons)
			byName[name] = i
			singletons = append(singletons, singletonView{Name: name, Nodes: []string{}})
		}
		return &singletons[i]
	}
	for _, b := range bound {
		if name, ok := strings.CutPrefix(b.Name, singletonsPrefix); ok {
			if reg, ok := strings.CutSuffix(name, "/nodes"); ok && b.Clusterable {
				s := single(reg)
				for _, of := range b.Offers {
					s.Nodes = append(s.Nodes, of.Node)
				}
				continue
			}
			s := single(name)
			s.Owner, s.Token = b.Offers[0].Node, b.Offers[0].Claimed
			continue
		}
		key := strings.TrimPrefix(b.Name, pins.DefaultPrefix+"/")
		pinned = append(pinned, pinView{Key: key, Owner: b.Offers[0].Node, Token: b.Offers[0].Claimed})
	}
	slices.SortFunc(singletons, func(a, b singletonView) int { return cmp.Compare(a.Name, b.Name) })
	return pinned, singletons
}

func (c *console) serveJSON(w http.ResponseWriter, r *http.Request) {
	st := c.state(r.Context(), r.URL.Query().Get("prefix"))
	code := http.StatusOK
	if st.Error != "" {
		code = http.StatusBadRequest
	}
	writeJSON(w, code, st)
}

func (c *console) serveHTML(w http.ResponseWriter, r *http.Request) {
	st := c.state(r.Context(), r.URL.Query().Get("prefix"))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	if st.Error != "" {
		w.WriteHeader(http.StatusBadRequest)
	}
	if err := consoleTemplate.Execute(w, st); err != nil {
		c.s.log.Warn("console page", "err", err)
	}
}
