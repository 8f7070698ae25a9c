package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupe-go/troupe/internal/proctest"
	"github.com/troupe-go/troupe/troupetest"
)

// TestConsolePinsAndSingletons runs the console on an in-process node of
// a three-node cluster and checks what it shows of pins, singletons and
// departed members, in JSON and in the page.
func TestConsolePinsAndSingletons(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the nodes' shutdown, registered later, which ends the console's goroutine
	tc := troupetest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	node := tc.Node(0)
	srv := newServer(options{role: roleManager}, node.Name(), slog.New(slog.DiscardHandler))
	srv.node.Store(node)
	srv.state.Store(stateReady)
	c, err := newConsole(srv, node, &wg)
	if err != nil {
		t.Fatal(err)
	}

	if err := node.Names().Bind(ctx, "services/other", []byte("http://example")); err != nil {
		t.Fatal(err)
	}
	pin, err := tc.Node(1).Pins().Pin(ctx, "cart/42")
	if err != nil {
		t.Fatal(err)
	}
	var token atomic.Uint64
	for _, i := range []int{1, 2} {
		if _, err := tc.Node(i).Pins().RunSingleton(ctx, "jms/orders", func(ctx context.Context, tok uint64) {
			token.Store(tok)
			<-ctx.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}

	var st consoleState
	proctest.WaitFor(ctx, t, "the console shows the pin and the singleton", func() bool {
		st = c.state(ctx, "")
		return len(st.Pins) == 1 && len(st.Singletons) == 1 && st.Singletons[0].Owner != "" &&
			st.Singletons[0].Token == token.Load() && len(st.Singletons[0].Nodes) == 2
	})
	if got, want := st.Pins[0], (pinView{Key: "cart/42", Owner: "node-1", Token: pin.Token}); got != want {
		t.Errorf("pin %+v, want %+v", got, want)
	}
	s := st.Singletons[0]
	if s.Name != "jms/orders" || !slices.Equal(s.Nodes, []string{"node-1", "node-2"}) {
		t.Errorf("singleton %+v", s)
	}
	if len(st.Members) != 3 || len(st.Nodes) != 3 || !st.Nodes[0].Reachable || st.Nodes[1].Reachable {
		t.Errorf("members %+v, nodes %+v", st.Members, st.Nodes)
	}
	if !strings.Contains(st.Nodes[1].Error, "no HTTP address") {
		t.Errorf("node-1, which has no HTTP address: %q", st.Nodes[1].Error)
	}

	// The page, with the prefix of the pins.
	rec := httptest.NewRecorder()
	c.serveHTML(rec, httptest.NewRequest(http.MethodGet, "/console/?prefix=troupe/pins", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`<tr class="pin" data-key="cart/42" data-owner="node-1" data-token="` + strconv.FormatUint(pin.Token, 10) + `"`,
		`<tr class="singleton" data-name="jms/orders" data-owner="` + s.Owner + `" data-token="` + strconv.FormatUint(s.Token, 10) + `"`,
		`<tr class="binding" data-name="troupe/pins/cart/42" data-scope="node" data-clusterable="false"`,
		`<li class="context" data-name="troupe/pins/singletons">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	if strings.Contains(body, `data-name="services/other"`) {
		t.Error("the page shows a binding outside the prefix")
	}
	if !slices.ContainsFunc(st.Bindings, func(b bindingView) bool {
		return b.Name == "services/other" && len(b.Offers) == 1 && b.Offers[0].Value == "http://example"
	}) {
		t.Errorf("the root lists no services/other: %+v", st.Bindings)
	}

	// A bad prefix is a 400 that says why.
	rec = httptest.NewRecorder()
	c.serveJSON(rec, httptest.NewRequest(http.MethodGet, "/console/api/state?prefix=a%20b", nil))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Errorf("bad prefix: %d %s", rec.Code, rec.Body.String())
	}

	// A member that leaves is shown as departed, and no longer as a member.
	if err := tc.Leave(2); err != nil {
		t.Fatal(err)
	}
	proctest.WaitFor(ctx, t, "the console shows node-2 as left", func() bool {
		st = c.state(ctx, "")
		return len(st.Members) == 2 && len(st.Departed) == 1 && st.Departed[0].Name == "node-2" && st.Departed[0].State == "left"
	})
}
