package replication_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"time"

	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/replication"
)

// node is one member on loopback with its sessions.
type node struct {
	c *membership.Cluster
	s *replication.Sessions
}

func (n node) stop() {
	n.s.Shutdown()
	n.c.Shutdown()
}

// startPair starts two members of cluster on loopback, a and b, each
// with sessions, and waits until each sees the other's sessions.
func startPair(ctx context.Context, cluster string) (a, b node) {
	// Every node of a cluster has the same key, which authenticates and
	// encrypts all their traffic, sessions included. Make one with
	//	head -c 32 /dev/urandom | base64
	// and give it to every node from your secret store. Here both nodes
	// run in this process and share a random one.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		log.Fatal(err)
	}
	start := func(name string, wellKnown ...string) node {
		c, err := membership.New(ctx, membership.Config{
			ClusterName: cluster,
			NodeName:    name,
			BindAddr:    "127.0.0.1:0",
			WellKnown:   wellKnown,
			Profile:     membership.ProfileLocal,
			SecretKeys:  [][]byte{key},
		})
		if err != nil {
			log.Fatal(err)
		}
		s, err := replication.NewSessions(ctx, c, replication.Options{})
		if err != nil {
			log.Fatal(err)
		}
		return node{c, s}
	}
	a = start("a")
	b = start("b", a.c.Addr())
	// Each node can place secondaries once it sees the other.
	if err := a.s.WaitPeers(ctx, 1); err != nil {
		log.Fatal(err)
	}
	if err := b.s.WaitPeers(ctx, 1); err != nil {
		log.Fatal(err)
	}
	return a, b
}

// Two nodes on loopback: a session created and saved on one is read on
// the other, which takes it over.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	na, nb := startPair(ctx, "example")
	defer nb.stop()
	defer na.stop()
	a, b := na.s, nb.s

	s, err := a.Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := replication.SetValue(s, "user", "ana"); err != nil {
		log.Fatal(err)
	}
	if err := a.Save(ctx, s); err != nil { // b has the change when Save returns
		log.Fatal(err)
	}
	route := s.Route()
	fmt.Println("primary is a:", route.Primary == a.NodeID(), "secondary is b:", route.Secondary == b.NodeID())

	s2, err := b.Get(ctx, s.ID()) // b takes the session over
	if err != nil {
		log.Fatal(err)
	}
	user, _, _ := replication.GetValue[string](s2, "user")
	fmt.Println("user:", user)
	fmt.Println("primary is b:", s2.Route().Primary == b.NodeID(), "secondary is a:", s2.Route().Secondary == a.NodeID())
	// Output:
	// primary is a: true secondary is b: true
	// user: ana
	// primary is b: true secondary is a: true
}

// The middleware keeps a visit counter in the session of each client.
// The client's cookie carries the session's route; when the client's
// next request reaches the other node (a load balancer without affinity,
// or the first node is gone), that node takes the session over and the
// counter goes on.
func ExampleSessions_Middleware() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	na, nb := startPair(ctx, "example-middleware")
	defer nb.stop()
	defer na.stop()

	visits := func(node string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, err := replication.FromRequest(r) // created on the first visit
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			n, _, _ := replication.GetValue[int](s, "visits")
			if err := replication.SetValue(s, "visits", n+1); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			// Saved, and replicated, before this reaches the client.
			fmt.Fprintf(w, "visit %d, served by %s", n+1, node)
		})
	}
	// httptest servers listen on 127.0.0.1.
	srvA := httptest.NewServer(na.s.Middleware(replication.HTTPOptions{})(visits("a")))
	defer srvA.Close()
	srvB := httptest.NewServer(nb.s.Middleware(replication.HTTPOptions{})(visits("b")))
	defer srvB.Close()

	jar, _ := cookiejar.New(nil) // cookies do not depend on the port: both servers get them
	client := &http.Client{Jar: jar}
	for _, url := range []string{srvA.URL, srvA.URL, srvB.URL, srvA.URL} {
		resp, err := client.Get(url)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// visit 1, served by a
	// visit 2, served by a
	// visit 3, served by b
	// visit 4, served by a
}

// HTTPOptions name the cookie and adjust it before it is sent. The
// cookie is sent when the session is new and whenever its route changes.
func ExampleSessions_Middleware_options() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	na, nb := startPair(ctx, "example-middleware-options")
	defer nb.stop()
	defer na.stop()

	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := replication.FromRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := replication.SetValue(s, "cart", r.URL.Query().Get("item")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(na.s.Middleware(replication.HTTPOptions{
		CookieName: "SHOPSESSION",
		Cookie: func(c *http.Cookie) {
			c.Path = "/shop"
			c.SameSite = http.SameSiteStrictMode
		},
	})(app))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/shop?item=book")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		route, err := replication.ParseID(c.Value)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("cookie:", c.Name, "path:", c.Path, "http-only:", c.HttpOnly, "strict:", c.SameSite == http.SameSiteStrictMode)
		fmt.Println("primary is a:", route.Primary == na.s.NodeID(), "secondary is b:", route.Secondary == nb.s.NodeID())
	}
	// Output:
	// cookie: SHOPSESSION path: /shop http-only: true strict: true
	// primary is a: true secondary is b: true
}
