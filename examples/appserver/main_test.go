package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/internal/netns"
	"github.com/troupe-go/troupe/internal/nodeflags"
	"github.com/troupe-go/troupe/internal/proctest"
	"github.com/troupe-go/troupe/membership"
)

// testTimeout bounds each process test; generous because the tests run
// with the race detector on a loaded machine too.
const testTimeout = 3 * time.Minute

func TestMain(m *testing.M) {
	code := m.Run()
	proctest.Cleanup()
	os.Exit(code)
}

// binary builds the example once per test binary and returns its path;
// tests that need it skip in -short mode.
func binary(t *testing.T) string { return proctest.Build(t, ".") }

// cleanEnv is the test's environment without the variables that
// configure appserver, so that the developer's own do not leak in.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, nodeflags.EnvPrefix) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// TestUsage: -h prints every flag with its environment variable and
// exits 0.
func TestUsage(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "-h")
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("appserver -h: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"Usage: appserver -role manager|worker", "-wka", "[$TROUPE_WKA]", "-key-file", "[$TROUPE_KEY_FILE]", "-transport", "-tls-ca"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("appserver -h does not say %q:\n%s", want, stdout.String())
		}
	}
}

// TestBadFlags: a bad flag or combination is refused with a message
// that names it and a non-zero exit, before anything is started.
func TestBadFlags(t *testing.T) {
	bin := binary(t)
	keyFile := writeKey(t)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string // in stderr
		not  string // not in stderr
	}{
		{"no role", nil, nil, "-role is required", ""},
		{"unknown role", []string{"-role", "boss", "-wka", "127.0.0.2:7946"}, nil, `-role "boss"`, ""},
		{"no discovery", []string{"-role", "worker", "-key-file", keyFile}, nil, "no discovery", ""},
		{"https without cert", []string{"-role", "worker", "-wka", "127.0.0.2:7946", "-https", "127.0.0.2:8443"}, nil, "-https needs -cert and -key", ""},
		{"half of mutual TLS", []string{"-role", "worker", "-wka", "127.0.0.2:7946", "-tls-ca", "ca.pem"}, nil, "needs all of -tls-ca, -tls-cert and -tls-key", ""},
		{"insecure with a key", []string{"-role", "worker", "-wka", "127.0.0.2:7946", "-insecure", "-key-file", keyFile}, nil, "-insecure, but a cluster key", ""},
		{"bad bind", []string{"-role", "worker", "-wka", "127.0.0.2:7946", "-bind", "localhost"}, nil, "-bind", ""},
		{"unknown flag", []string{"-role", "worker", "-colour", "red"}, nil, "flag provided but not defined: -colour", ""},
		{"bad value from the environment", []string{"-wka", "127.0.0.2:7946"}, []string{"TROUPE_ROLE=worker", "TROUPE_WEIGHT=heavy"}, "$TROUPE_WEIGHT", ""},
		{"a flag wins over the environment", []string{"-role", "worker"}, []string{"TROUPE_ROLE=boss"}, "no discovery", "boss"},
		{"no cluster key", []string{"-role", "worker", "-bind", "127.0.0.2:0", "-http", "127.0.0.2:0", "-wka", "127.0.0.2:7946"}, nil, "no cluster key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			cmd.Env = cleanEnv(tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("appserver %s: %v, want a non-zero exit\n%s", strings.Join(tc.args, " "), err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
			if tc.not != "" && strings.Contains(stderr.String(), tc.not) {
				t.Errorf("stderr says %q:\n%s", tc.not, stderr.String())
			}
		})
	}
}

// TestClusterForms: a manager and two workers by well-known members
// form a cluster, which the manager's console shows: three alive members,
// the workers' offers of their service, every node's status.
func TestClusterForms(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c := newCluster(t)
	mgr := c.start(ctx, t, nodeSpec{role: roleManager, name: "manager", ip: "127.0.0.2"})
	w1 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-1", ip: "127.0.0.3", wka: mgr.gossip})
	// The second worker takes its settings from the environment.
	w2 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-2", ip: "127.0.0.4", wka: mgr.gossip, byEnv: true})

	st := c.waitState(ctx, t, mgr, "three alive members and both workers' offers", func(st consoleState) bool {
		return len(aliveMembers(st)) == 3 && sameSet(offers(st, "services/web"), w1.name, w2.name) &&
			sameSet(offers(st, consoleService), mgr.name) && reachable(st) == 3
	})
	roles := map[string]string{}
	for _, m := range st.Members {
		roles[m.Name] = m.Role
	}
	if roles[mgr.name] != roleManager || roles[w1.name] != roleWorker || roles[w2.name] != roleWorker {
		t.Errorf("roles %v", roles)
	}
	for _, n := range st.Nodes {
		if n.Status.Name != n.Name || n.Status.State != "ready" {
			t.Errorf("status of %s: %+v", n.Name, n.Status)
		}
	}
	for _, b := range st.Bindings {
		if b.Name != "services/web" {
			continue
		}
		for _, of := range b.Offers {
			if want := c.byName(of.Node).url; of.Value != want {
				t.Errorf("offer of %s: %q, want its URL %q", of.Node, of.Value, want)
			}
		}
	}

	// The page shows the same, with the elements a browser test finds.
	r := mgr.get(t, "/console/")
	if r.status != http.StatusOK || r.header.Get(nodeHeader) != mgr.name {
		t.Fatalf("GET /console/: %s", r)
	}
	for _, want := range []string{`<table id="members">`, `<tr class="member" data-name="worker-1" data-role="worker" data-state="alive"`,
		`<table id="bindings">`, `<tr class="binding" data-name="services/web"`, `<li class="offer" data-node="worker-2"`, `<table id="nodes">`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("the console page has no %s", want)
		}
	}
	if n := strings.Count(r.body, `<tr class="member"`); n != 3 {
		t.Errorf("the console page lists %d members, want 3", n)
	}
	if r := mgr.get(t, "/"); r.status != http.StatusFound || r.header.Get("Location") != "/console/" {
		t.Errorf("GET / on the manager: %s, want a redirect to /console/", r)
	}
	for _, n := range []*proc{mgr, w1, w2} {
		r := n.get(t, "/metrics")
		for _, want := range []string{`troupe_members{node="` + n.name + `",state="alive"} 3`, `troupe_sessions{node="` + n.name + `",role="primary"}`, "go_goroutines"} {
			if r.status != http.StatusOK || !strings.Contains(r.body, want) {
				t.Errorf("%s /metrics: %d, without %s", n.name, r.status, want)
			}
		}
		if r := n.get(t, "/healthz"); r.status != http.StatusOK {
			t.Errorf("%s /healthz: %s", n.name, r)
		}
		if r := n.get(t, "/readyz"); r.status != http.StatusOK || r.header.Get(nodeHeader) != n.name {
			t.Errorf("%s /readyz: %s", n.name, r)
		}
	}
}

// TestSessionSurvivesKill: a client's session, updated 20 times on one
// worker, is read on the other after the first is killed with SIGKILL;
// a retry of the last update (its Idempotency-Key) is not applied twice.
func TestSessionSurvivesKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c := newCluster(t)
	mgr := c.start(ctx, t, nodeSpec{role: roleManager, name: "manager", ip: "127.0.0.2"})
	a := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-a", ip: "127.0.0.3", wka: mgr.gossip})
	b := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-b", ip: "127.0.0.4", wka: mgr.gossip})
	c.waitPeers(ctx, t, 2, mgr, a, b) // a session made now gets a secondary at once

	cl := newClient(t)
	const n = 20
	for i := 1; i <= n; i++ {
		v := cl.counter(t, a, http.MethodPost, fmt.Sprintf("inc-%d", i))
		if v.Value != int64(i) || v.Node != a.name || v.Session == "" {
			t.Fatalf("POST /counter #%d on %s: %+v", i, a.name, v)
		}
	}
	if v := cl.counter(t, a, http.MethodPost, fmt.Sprintf("inc-%d", n)); v.Value != n {
		t.Fatalf("retry of the last POST /counter on %s: value %d, want %d (not applied twice)", a.name, v.Value, n)
	}

	a.Kill(t)
	cl.follow(a, b) // the client (or a proxy) turns to the other worker
	var got counterReply
	proctest.WaitFor(ctx, t, b.name+" serves the session", func() bool {
		r, err := cl.do(b, http.MethodGet, "/counter", "", nil)
		if err != nil || r.status != http.StatusOK {
			return false // 503 until the cluster settles who serves it
		}
		got = decode[counterReply](t, r)
		if got.Value != n {
			t.Fatalf("GET /counter on %s after the kill: %+v, want value %d", b.name, got, n)
		}
		return true
	})
	if got.Node != b.name {
		t.Errorf("served by %q, want %s", got.Node, b.name)
	}
	if v := cl.counter(t, b, http.MethodPost, fmt.Sprintf("inc-%d", n)); v.Value != n {
		t.Fatalf("retry on %s of the last POST /counter made on %s: value %d, want %d", b.name, a.name, v.Value, n)
	}
	if v := cl.counter(t, b, http.MethodPost, fmt.Sprintf("inc-%d", n+1)); v.Value != n+1 {
		t.Fatalf("next POST /counter on %s: value %d, want %d", b.name, v.Value, n+1)
	}
}

// TestGracefulLeave: SIGTERM makes a worker leave and exit 0; its offer
// disappears from the manager's console, which shows it as left, and
// its sessions live on.
func TestGracefulLeave(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c := newCluster(t)
	mgr := c.start(ctx, t, nodeSpec{role: roleManager, name: "manager", ip: "127.0.0.2"})
	w1 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-1", ip: "127.0.0.3", wka: mgr.gossip})
	w2 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-2", ip: "127.0.0.4", wka: mgr.gossip})
	c.waitPeers(ctx, t, 2, mgr, w1, w2)
	c.waitState(ctx, t, mgr, "both workers' offers", func(st consoleState) bool {
		return sameSet(offers(st, "services/web"), w1.name, w2.name)
	})

	cl := newClient(t)
	for i := 1; i <= 3; i++ {
		cl.counter(t, w1, http.MethodPost, "")
	}
	r, err := cl.do(w1, http.MethodPost, "/cart", "item=book&qty=2", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("POST /cart: %v %s", err, r)
	}

	if err := w1.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w1.Exited:
	case <-ctx.Done():
		t.Fatalf("%s did not exit after SIGTERM", w1.name)
	}
	if code := w1.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM, want 0", w1.name, code)
	}
	if !strings.Contains(w1.Stderr.String(), "left the cluster") {
		t.Errorf("%s did not log that it left", w1.name)
	}
	c.waitState(ctx, t, mgr, w1.name+"'s offer gone and "+w1.name+" shown as left", func(st consoleState) bool {
		left := false
		for _, d := range st.Departed {
			left = left || d.Name == w1.name && d.State == "left"
		}
		return left && len(aliveMembers(st)) == 2 && sameSet(offers(st, "services/web"), w2.name)
	})

	cl.follow(w1, w2)
	if v := cl.counter(t, w2, http.MethodGet, ""); v.Value != 3 || v.Node != w2.name {
		t.Errorf("GET /counter on %s after %s left: %+v, want 3", w2.name, w1.name, v)
	}
	r, err = cl.do(w2, http.MethodGet, "/cart", "", nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("GET /cart: %v %s", err, r)
	}
	if cart := decode[reply](t, r); len(cart.Items) != 1 || cart.Items[0] != (cartItem{"book", 2}) {
		t.Errorf("cart on %s after %s left: %+v", w2.name, w1.name, cart.Items)
	}
}

// TestMulticast: a manager and two workers find each other by multicast
// alone, inside a network namespace of the test's own (it needs root;
// without, it skips), and a session moves from one worker to the other.
func TestMulticast(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example and runs it as processes")
	}
	if !netns.Run(t) {
		return // the parent: the test ran in the child
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c := newCluster(t)
	group := "239.192.20.1:" + strconv.Itoa(freePortPair(t, "127.0.0.2"))
	mgr := c.start(ctx, t, nodeSpec{role: roleManager, name: "manager", ip: "127.0.0.2", multicast: group})
	w1 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-1", ip: "127.0.0.3", multicast: group})
	w2 := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker-2", ip: "127.0.0.4", multicast: group})
	c.waitState(ctx, t, mgr, "three alive members and both workers' offers", func(st consoleState) bool {
		return len(aliveMembers(st)) == 3 && sameSet(offers(st, "services/web"), w1.name, w2.name)
	})
	c.waitPeers(ctx, t, 2, mgr, w1, w2)

	cl := newClient(t)
	cl.counter(t, w1, http.MethodPost, "")
	cl.follow(w1, w2)
	if v := cl.counter(t, w2, http.MethodGet, ""); v.Value != 1 {
		t.Errorf("GET /counter on %s: %+v, want 1", w2.name, v)
	}
}

// ---- the cluster of processes ----

// cluster is the processes of one test, sharing a cluster name and key.
type cluster struct {
	bin, name, keyFile string
	procs              []*proc
}

func newCluster(t *testing.T) *cluster {
	b := make([]byte, 4)
	rand.Read(b)
	return &cluster{bin: binary(t), name: "appserver-test-" + hex.EncodeToString(b), keyFile: writeKey(t)}
}

// writeKey writes a new cluster key to a file and returns its path.
func writeKey(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(f, []byte(base64.StdEncoding.EncodeToString(membership.GenerateKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// nodeSpec says how to start one node.
type nodeSpec struct {
	role, name, ip string
	wka            string   // the manager's gossip address; "" for the manager itself
	multicast      string   // a group:port to discover the others on, in place of wka
	byEnv          bool     // pass the settings as environment variables
	tls            *testTLS // serve HTTPS only, and use mutual TLS between nodes
	args           []string // more flags
}

// proc is one running node.
type proc struct {
	*proctest.Proc
	name, role  string
	gossip, url string // as it reported them
	client      *http.Client
}

func (c *cluster) byName(name string) *proc {
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	return &proc{}
}

// start runs a node on spec.ip with a free gossip port (the transport
// port after it free too) and any free HTTP port, and waits until it is
// ready. Cleanup kills it, and logs its stderr if the test failed.
//
// A port found free may be taken before the node binds it (by the
// node's own HTTP listener on port 0, say): the node then exits with
// "address already in use", and is started again on other ports.
func (c *cluster) start(ctx context.Context, t *testing.T, spec nodeSpec) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := c.tryStart(ctx, t, spec)
		if p != nil {
			return p
		}
		if attempt == 3 {
			t.Fatalf("%s: a port picked for it was taken before it could bind it, three times", spec.name)
		}
		t.Logf("%s: a port picked for it was taken before it could bind it; starting it on others", spec.name)
	}
}

// tryStart is one try of start; nil when the node lost a port to another
// binder.
func (c *cluster) tryStart(ctx context.Context, t *testing.T, spec nodeSpec) *proc {
	t.Helper()
	gossip := net.JoinHostPort(spec.ip, strconv.Itoa(freePortPair(t, spec.ip)))
	settings := [][2]string{
		{"role", spec.role}, {"name", spec.name}, {"cluster", c.name}, {"key-file", c.keyFile},
		{"bind", gossip}, {"profile", "local"}, {"log-level", "debug"},
	}
	switch {
	case spec.multicast != "":
		settings = append(settings, [][2]string{{"multicast", spec.multicast}, {"multicast-interface", "lo"}}...)
	case spec.wka != "":
		settings = append(settings, [2]string{"wka", spec.wka})
	default:
		settings = append(settings, [2]string{"wka", gossip}) // the manager lists itself: it may start first
	}
	tr := &http.Transport{DisableKeepAlives: true}
	if spec.tls != nil {
		settings = append(settings, [][2]string{{"https", spec.ip + ":0"}, {"cert", spec.tls.cert}, {"key", spec.tls.key},
			{"tls-ca", spec.tls.ca}, {"tls-cert", spec.tls.cert}, {"tls-key", spec.tls.key}}...)
		tr.TLSClientConfig = &tls.Config{RootCAs: spec.tls.pool}
	} else {
		settings = append(settings, [2]string{"http", spec.ip + ":0"})
	}
	var args, env []string
	for _, s := range settings {
		if spec.byEnv {
			env = append(env, nodeflags.EnvName(s[0])+"="+s[1])
		} else {
			args = append(args, "-"+s[0], s[1])
		}
	}
	p := &proc{name: spec.name, role: spec.role,
		Proc: proctest.Start(t, spec.name, c.bin, append(args, spec.args...), cleanEnv(env...)),
		client: &http.Client{Timeout: 10 * time.Second, Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
	lostPort := false
	proctest.WaitFor(ctx, t, p.name+" reports its addresses", func() bool {
		select {
		case <-p.Exited:
			lostPort = strings.Contains(p.Stderr.String(), "address already in use")
			if lostPort {
				return true
			}
		default:
		}
		line, ok := p.FirstLine(t)
		if !ok {
			return false
		}
		var name, role, transport string
		if _, err := fmt.Sscanf(line, "appserver: node %s role %s gossip %s transport %s url %s", &name, &role, &p.gossip, &transport, &p.url); err != nil || name != p.name || role != p.role {
			t.Fatalf("%s: unexpected first line %q (%v)", p.name, line, err)
		}
		if want := net.JoinHostPort(spec.ip, strconv.Itoa(mustPort(t, gossip)+1)); transport != want {
			t.Errorf("%s: transport %s, want the gossip port + 1: %s", p.name, transport, want)
		}
		return true
	})
	if lostPort {
		return nil
	}
	c.procs = append(c.procs, p)
	proctest.WaitFor(ctx, t, p.name+" is ready", func() bool {
		r, err := p.do(http.MethodGet, "/readyz", "", nil, nil)
		return err == nil && r.status == http.StatusOK
	})
	return p
}

// freePortPair returns a port p on ip such that p is free for TCP and
// UDP (gossip) and p+1 for TCP (the default transport port).
func freePortPair(t *testing.T, ip string) int {
	t.Helper()
	for range 100 {
		p := clustertest.FreePort(t, ip)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p+1)))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free pair of ports")
	return 0
}

func mustPort(t *testing.T, addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   string
}

func (r response) String() string {
	return fmt.Sprintf("%d %q (%s %q)", r.status, r.body, nodeHeader, r.header.Get(nodeHeader))
}

// do sends a request to the node, with client's cookies if client is
// not nil.
func (p *proc) do(method, path, body string, header map[string]string, client *http.Client) (response, error) {
	req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if client == nil {
		client = p.client
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

func (p *proc) get(t *testing.T, path string) response {
	t.Helper()
	r, err := p.do(http.MethodGet, path, "", nil, nil)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", path, p.name, err)
	}
	return r
}

// waitState polls the manager's /console/api/state until cond holds and
// returns that state.
func (c *cluster) waitState(ctx context.Context, t *testing.T, mgr *proc, what string, cond func(consoleState) bool) consoleState {
	t.Helper()
	var st consoleState
	proctest.WaitFor(ctx, t, "the console shows "+what, func() bool {
		r, err := mgr.do(http.MethodGet, "/console/api/state", "", nil, nil)
		if err != nil || r.status != http.StatusOK {
			return false
		}
		st = decode[consoleState](t, r)
		return cond(st)
	})
	return st
}

// waitPeers waits until every node sees n other nodes holding sessions.
func (c *cluster) waitPeers(ctx context.Context, t *testing.T, n int, procs ...*proc) {
	t.Helper()
	for _, p := range procs {
		proctest.WaitFor(ctx, t, fmt.Sprintf("%s sees %d session peers", p.name, n), func() bool {
			r, err := p.do(http.MethodGet, statusPath, "", nil, nil)
			if err != nil || r.status != http.StatusOK {
				return false
			}
			return len(decode[nodeStatus](t, r).Peers) == n
		})
	}
}

func aliveMembers(st consoleState) []string {
	var out []string
	for _, m := range st.Members {
		if m.State == "alive" {
			out = append(out, m.Name)
		}
	}
	return out
}

// offers returns the nodes offering name.
func offers(st consoleState, name string) []string {
	var out []string
	for _, b := range st.Bindings {
		if b.Name == name {
			for _, of := range b.Offers {
				out = append(out, of.Node)
			}
		}
	}
	return out
}

// reachable counts the nodes whose status the console could read.
func reachable(st consoleState) int {
	n := 0
	for _, v := range st.Nodes {
		if v.Reachable {
			n++
		}
	}
	return n
}

func sameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			return false
		}
	}
	return true
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decoding %s: %v", r, err)
	}
	return v
}

// ---- a client with a cookie jar ----

type client struct {
	jar  *cookiejar.Jar
	http *http.Client
}

// newClient returns a client with its own cookie jar, trusting the CA
// of tt if given.
func newClient(t *testing.T, tt ...*testTLS) *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	if len(tt) > 0 {
		tr.TLSClientConfig = &tls.Config{RootCAs: tt[0].pool}
	}
	return &client{jar: jar, http: &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: tr}}
}

func (c *client) do(p *proc, method, path, body string, header map[string]string) (response, error) {
	return p.do(method, path, body, header, c.http)
}

// follow gives the cookies of from's host to to's: the nodes are on
// different IPs, which the jar keeps apart (a proxy in front of both
// would be one host to the client).
func (c *client) follow(from, to *proc) {
	fu, _ := url.Parse(from.url)
	tu, _ := url.Parse(to.url)
	c.jar.SetCookies(tu, c.jar.Cookies(fu))
}

// counterReply is the answer of /counter.
type counterReply struct {
	Value   int64  `json:"value"`
	Node    string `json:"node"`
	Session string `json:"session"`
}

// counter sends method /counter to p, with an Idempotency-Key if key is
// set, and fails the test unless it gets 200.
func (c *client) counter(t *testing.T, p *proc, method, key string) counterReply {
	t.Helper()
	var h map[string]string
	if key != "" {
		h = map[string]string{idempotencyHeader: key}
	}
	r, err := c.do(p, method, "/counter", "", h)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("%s /counter on %s: %v %s", method, p.name, err, r)
	}
	if r.header.Get(nodeHeader) != p.name {
		t.Errorf("%s /counter on %s: %s %q", method, p.name, nodeHeader, r.header.Get(nodeHeader))
	}
	return decode[counterReply](t, r)
}

// ---- helpers ----
