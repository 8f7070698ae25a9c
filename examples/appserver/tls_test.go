package main

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"

	"github.com/troupe-go/troupe/internal/testcerts"
)

// testTLS is a throwaway CA and one certificate, valid for 127.0.0.1-17,
// that every node of a test uses, as PEM files.
type testTLS struct {
	ca, cert, key string // file paths
	pool          *x509.CertPool
}

func newTestTLS(t *testing.T) *testTLS {
	t.Helper()
	ca := testcerts.NewCA(t)
	tt := &testTLS{pool: ca.Pool}
	tt.ca, tt.cert, tt.key = ca.WriteFiles(t, t.TempDir())
	return tt
}

// TestTLS: a manager and a worker with HTTPS only and mutual TLS between
// them: they form a cluster, the console reads the worker's status over
// https, and a session works with a Secure cookie.
func TestTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tt := newTestTLS(t)
	c := newCluster(t)
	mgr := c.start(ctx, t, nodeSpec{role: roleManager, name: "manager", ip: "127.0.0.2", tls: tt})
	w := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker", ip: "127.0.0.3", wka: mgr.gossip, tls: tt})
	if !strings.HasPrefix(w.url, "https://") {
		t.Fatalf("worker URL %q, want https", w.url)
	}
	c.waitState(ctx, t, mgr, "two members, the worker's https offer, both statuses", func(st consoleState) bool {
		of := offers(st, "services/web")
		return len(aliveMembers(st)) == 2 && reachable(st) == 2 && len(of) == 1 && of[0] == w.name &&
			st.Bindings[0].Offers[0].Value == w.url
	})

	cl := newClient(t, tt)
	r, err := cl.do(w, http.MethodPost, "/counter", "", nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("POST /counter over https: %v %s", err, r)
	}
	if v := decode[counterReply](t, r); v.Value != 1 {
		t.Errorf("POST /counter: %+v", v)
	}
	if sc := r.header.Get("Set-Cookie"); !strings.Contains(sc, "Secure") {
		t.Errorf("session cookie over https without Secure: %q", sc)
	}
}
