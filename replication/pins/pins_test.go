package pins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/clustertest"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
)

// pinNode is one in-process member with a naming tree and pins.
type pinNode struct {
	c    *membership.Cluster
	tree *naming.Tree
	pins *Pins
	tc   *clustertest.Cluster // the whole test cluster, for partitions
}

// startPins starts n members joined through node 0, a tree and Pins on
// each, and waits until every node sees n members.
func startPins(t testing.TB, n int, mutate ...func(i int, c *membership.Config)) []*pinNode {
	t.Helper()
	return startPinsWith(t, n, nil, mutate...)
}

// startPinsWith is startPins with popts, if not nil, adjusting the
// Options of each node's Pins.
func startPinsWith(t testing.TB, n int, popts func(i int, o *Options), mutate ...func(i int, c *membership.Config)) []*pinNode {
	t.Helper()
	tc := clustertest.Start(t, n, mutate...)
	tc.WaitMembers(n)
	nodes := make([]*pinNode, n)
	for i, c := range tc.Nodes {
		tree, err := naming.New(c, naming.Options{Logger: clustertest.Logger(t, c.Name()+" naming")})
		require.NoError(t, err)
		t.Cleanup(func() { tree.Close() })
		o := Options{Logger: clustertest.Logger(t, c.Name()+" pins")}
		if popts != nil {
			popts(i, &o)
		}
		pins, err := New(testCtx(t), c, tree, o)
		require.NoError(t, err)
		t.Cleanup(pins.Shutdown)
		nodes[i] = &pinNode{c: c, tree: tree, pins: pins, tc: tc}
	}
	return nodes
}

// kill stops node n as a crash would: its peers learn of it only from
// failure detection.
func (n *pinNode) kill() {
	n.c.Shutdown()
	n.pins.Shutdown()
	n.tree.Close()
}

func (n *pinNode) name() string { return n.c.Name() }

// Five nodes pin the same key at the same moment, many times: every call
// returns the same owner, and every node's Owner agrees at once.
func TestPinConcurrentOneOwner(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 5)
	ctx := testCtx(t)
	owners := map[string]int{}
	for r := range 25 {
		key := fmt.Sprintf("cart/%d", r)
		got := make([]Pin, len(nodes))
		errs := make([]error, len(nodes))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() {
				<-start
				got[i], errs[i] = n.pins.Pin(ctx, key)
			})
		}
		close(start)
		wg.Wait()
		for i := range nodes {
			require.NoError(t, errs[i], "node %d, round %d", i, r)
			require.Equal(t, got[0], got[i], "round %d: node %d was told another owner", r, i)
		}
		for _, n := range nodes {
			pin, err := n.pins.Owner(key)
			require.NoError(t, err)
			require.Equal(t, got[0], pin, "%s disagrees right after the Pins returned", n.name())
		}
		owners[got[0].Owner]++
	}
	t.Logf("owners over 25 rounds: %v", owners)
}

// The owner of a pin is killed: every watcher is told, naming the failed
// owner; Owner never names it after that; a new Pin lands on a live node
// with a larger token.
func TestPinOwnerKilledWatchersTold(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 4)
	ctx := testCtx(t)
	pin, err := nodes[0].pins.Pin(ctx, "orders/42")
	require.NoError(t, err)
	require.Equal(t, nodes[0].name(), pin.Owner)

	lost := make(chan Event, 16)
	for _, n := range nodes[1:] {
		w, err := n.pins.Watch(ctx, "orders")
		require.NoError(t, err)
		t.Cleanup(w.Close)
		go func() {
			for ev := range w.Events() {
				if ev.Type == Lost || ev.Type == Released {
					// Owner must not name the failed node once the loss is known.
					_, err := n.pins.Owner("orders/42")
					if !errors.Is(err, ErrNotPinned) {
						ev.Reason += fmt.Sprintf(" BUT Owner then said %v", err)
					}
					lost <- ev
				}
			}
		}()
	}
	nodes[0].kill()
	for range 3 {
		select {
		case ev := <-lost:
			assert.Equal(t, Lost, ev.Type)
			assert.Equal(t, pin, ev.Pin)
			assert.Contains(t, ev.Reason, nodes[0].name())
			assert.NotContains(t, ev.Reason, "BUT")
		case <-ctx.Done():
			t.Fatal("not every watcher was told the pin was lost")
		}
	}
	again, err := nodes[2].pins.Pin(ctx, "orders/42")
	require.NoError(t, err)
	assert.Equal(t, nodes[2].name(), again.Owner)
	assert.Greater(t, again.Token, pin.Token, "fencing token must grow from owner to owner")
	for _, n := range nodes[1:] {
		got, err := n.pins.Owner("orders/42")
		require.NoError(t, err)
		assert.Equal(t, again, got)
	}
}

// On places the pin on a node chosen among a service's offers.
func TestPinOnServiceByPolicy(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 3)
	ctx := testCtx(t)
	for _, n := range nodes[1:] {
		require.NoError(t, n.tree.Bind(ctx, "svc/carts", nil, naming.Clusterable()))
	}
	require.Eventually(t, func() bool {
		b, err := nodes[0].tree.Lookup("svc/carts")
		return err == nil && len(b.Offers) == 2
	}, clustertest.Timeout, 10*time.Millisecond)
	placed := map[string]int{}
	policy := naming.RoundRobin()
	for i := range 6 {
		pin, err := nodes[0].pins.Pin(ctx, fmt.Sprintf("cart/%d", i), On("svc/carts", policy))
		require.NoError(t, err)
		placed[pin.Owner]++
		got, err := nodes[0].pins.Owner(pin.Key)
		require.NoError(t, err)
		assert.Equal(t, pin, got)
	}
	assert.Equal(t, map[string]int{nodes[1].name(): 3, nodes[2].name(): 3}, placed)
	// A pinned key stays where it is.
	pin, err := nodes[0].pins.Pin(ctx, "cart/0", On("svc/carts", policy))
	require.NoError(t, err)
	before, _ := nodes[1].pins.Owner("cart/0")
	assert.Equal(t, before, pin)
}

// Release by the owner tells the watchers; by another node it fails;
// Leave releases everything the node owns.
func TestPinReleaseAndLeave(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 3)
	ctx := testCtx(t)
	w, err := nodes[2].pins.Watch(ctx, "")
	require.NoError(t, err)
	t.Cleanup(w.Close)
	_, err = nodes[0].pins.Pin(ctx, "a")
	require.NoError(t, err)
	_, err = nodes[0].pins.Pin(ctx, "b/c")
	require.NoError(t, err)
	require.ErrorIs(t, nodes[1].pins.Release(ctx, "a"), ErrNotOwner)
	require.NoError(t, nodes[0].pins.Release(ctx, "a"))
	_, err = nodes[0].pins.Owner("a")
	require.ErrorIs(t, err, ErrNotPinned)
	_, err = nodes[0].pins.Pin(ctx, "bad//key")
	require.ErrorIs(t, err, ErrInvalidKey)

	require.NoError(t, nodes[0].pins.Leave(ctx))
	_, err = nodes[0].pins.Pin(ctx, "x")
	require.ErrorIs(t, err, ErrClosed)
	want := map[string]EventType{"a": Released, "b/c": Released}
	got := map[string]EventType{}
	for len(got) < len(want) {
		select {
		case ev := <-w.Events():
			if ev.Type != Acquired {
				got[ev.Pin.Key] = ev.Type
			}
		case <-ctx.Done():
			t.Fatalf("events so far: %v", got)
		}
	}
	assert.Equal(t, want, got)
}

// A Pin on another node right after Release returned places the key
// anew there, with a larger token: it is never told the released pin.
func TestPinAfterReleasePlacesAnew(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 5)
	ctx := testCtx(t)
	var last uint64
	for r := range 20 {
		key := fmt.Sprintf("r/%d", r%3) // keys come back: tokens must still grow
		owner, next := nodes[r%5], nodes[(r+1)%5]
		pin, err := owner.pins.Pin(ctx, key)
		require.NoError(t, err)
		require.Equal(t, owner.name(), pin.Owner, "round %d", r)
		require.Greater(t, pin.Token, last, "round %d: tokens grow", r)
		require.NoError(t, owner.pins.Release(ctx, key))

		got, err := next.pins.Pin(ctx, key)
		require.NoError(t, err)
		require.Equal(t, next.name(), got.Owner, "round %d: told the released pin", r)
		require.Greater(t, got.Token, pin.Token, "round %d", r)
		last = got.Token
		require.NoError(t, next.pins.Release(ctx, key))
	}
}

// Requests for a pinned key reach its owner from any node; after the owner
// dies they get a 503 with a reason; once re-pinned they succeed again.
func TestPinForwardingHandler(t *testing.T) {
	t.Parallel()
	nodes := startPins(t, 3)
	ctx := testCtx(t)
	urls := make([]string, len(nodes))
	servers := make([]*http.Server, len(nodes))
	for i, n := range nodes {
		ln, err := net.Listen("tcp", clustertest.Host(i)+":0")
		require.NoError(t, err)
		local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s served %s", n.name(), r.URL.Path)
		})
		srv := &http.Server{Handler: n.pins.Handler(func(r *http.Request) string {
			return strings.TrimPrefix(r.URL.Path, "/")
		}, local)}
		servers[i] = srv
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		urls[i] = "http://" + ln.Addr().String()
		require.NoError(t, n.c.UpdateMeta(ctx, func(m *membership.Meta) {
			m.Tags = map[string]string{DefaultHTTPTag: ln.Addr().String()}
		}))
	}
	get := func(i int, path string) (int, string) {
		resp, err := http.Get(urls[i] + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, err := nodes[1].pins.Pin(ctx, "queue")
	require.NoError(t, err)
	require.Eventually(t, func() bool { // the tags travel by gossip
		for i := range nodes {
			if code, _ := get(i, "/queue"); code != http.StatusOK {
				return false
			}
		}
		return true
	}, clustertest.Timeout, 20*time.Millisecond)
	for i := range nodes {
		code, body := get(i, "/queue")
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, nodes[1].name()+" served /queue", body)
	}
	code, body := get(0, "/nobody")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "has no owner")

	nodes[1].kill() // the process dies: its HTTP server with it
	require.NoError(t, servers[1].Close())
	for _, i := range []int{0, 2} {
		code, body := get(i, "/queue")
		assert.Equal(t, http.StatusServiceUnavailable, code, body)
		assert.Contains(t, body, "troupe: ")
	}
	require.Eventually(t, func() bool {
		_, err := nodes[0].pins.Owner("queue")
		return errors.Is(err, ErrNotPinned)
	}, clustertest.Timeout, 20*time.Millisecond)
	code, body = get(0, "/queue")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "has no owner")

	_, err = nodes[2].pins.Pin(ctx, "queue")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, body = get(0, "/queue")
		return code == http.StatusOK && body == nodes[2].name()+" served /queue"
	}, clustertest.Timeout, 20*time.Millisecond, "last answer: %d %s", code, body)
}

func TestPinOptionsValidate(t *testing.T) {
	require.NoError(t, Options{}.Validate())
	require.ErrorIs(t, Options{Prefix: "/"}.Validate(), ErrInvalidOptions)
	require.ErrorIs(t, Options{QuorumWindow: time.Millisecond}.Validate(), ErrInvalidOptions)
	_, err := New(context.Background(), nil, nil, Options{})
	require.ErrorIs(t, err, ErrInvalidOptions)
}

// A remote node's refusal keeps its sentinel identity across the call,
// and an empty key never pins the prefix itself.
func TestPinRemoteErrorsKeepIdentity(t *testing.T) {
	nodes := startPins(t, 2)
	ctx := testCtx(t)
	_, err := nodes[0].pins.ch.Call(ctx, nodes[1].name(), methodClaim, []byte(""))
	require.ErrorIs(t, err, ErrInvalidKey)
	var rerr *membership.RemoteError
	require.ErrorAs(t, err, &rerr)
	require.Equal(t, nodes[1].name(), rerr.Node)

	_, err = nodes[0].pins.Pin(ctx, "")
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = nodes[0].pins.Owner("")
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = nodes[1].tree.Lookup(DefaultPrefix)
	require.ErrorIs(t, err, naming.ErrNotFound, "nothing was bound at the prefix")
}

// TestPinMajorityClaimSurvivesTheHeal: a pin's owner cut off on the
// minority side, whose own failure detection is slow (WAN timings) so
// that it still counts a quorum, gives the pin up within the owner lease,
// before the majority side, which declared it failed, claims the key
// anew. At the heal the majority's claim stands on every node, with its
// larger token. Without the lease the old owner's earlier claim came back
// with the heal and won: a smaller token after a larger one.
func TestPinMajorityClaimSurvivesTheHeal(t *testing.T) {
	nodes := startPins(t, 5, func(i int, c *membership.Config) {
		if i == 0 {
			c.Profile = membership.ProfileWAN
		}
	})
	tc := nodes[0].tc
	old, err := nodes[0].pins.Pin(testCtx(t), "k")
	require.NoError(t, err)
	require.Equal(t, nodes[0].name(), old.Owner)

	tc.Net.Partition(tc.Hosts(0, 1), tc.Hosts(2, 3, 4))
	var won Pin
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
		defer cancel()
		p, err := nodes[2].pins.Pin(ctx, "k")
		if err != nil || p.Owner == nodes[0].name() {
			return false
		}
		won = p
		return true
	}, clustertest.Timeout, 50*time.Millisecond, "the majority side never claimed the key")
	require.Greater(t, won.Token, old.Token)

	tc.Net.Heal()
	tc.WaitMembers(5)
	// Every node agrees, and not on the old claim. Normally on the
	// majority's; on a machine loaded enough for that owner to miss its
	// own lease around the heal, on a later claim, with a larger token.
	for _, n := range nodes {
		p, err := n.pins.Pin(testCtx(t), "k")
		require.NoError(t, err)
		require.NotEqual(t, old, p, "Pin on %s: the old claim came back", n.name())
		require.GreaterOrEqual(t, p.Token, won.Token, "Pin on %s", n.name())
	}
	require.Eventually(t, func() bool {
		first, err := nodes[0].pins.Owner("k")
		if err != nil {
			return false
		}
		for _, n := range nodes[1:] {
			if p, err := n.pins.Owner("k"); err != nil || p != first {
				return false
			}
		}
		return first.Token >= won.Token
	}, clustertest.Timeout, 20*time.Millisecond, "the nodes do not agree on one owner")
}

// TestPinClaimDuringAFailureIsWithdrawn: a claim made while a member is
// cut off waits for that member's answer until failure detection drops
// it, and would then complete on this side's answers alone. It is
// withdrawn and made again once the owner lease after the failure is
// over: the token the caller gets is younger than the failure by at least
// OwnerLease. Before, the first claim stood, born at the cut, and at a
// heal it would beat a claim made meanwhile on the other side.
func TestPinClaimDuringAFailureIsWithdrawn(t *testing.T) {
	nodes := startPins(t, 3)
	tc := nodes[0].tc
	tc.Net.Partition(tc.Hosts(0, 1), tc.Hosts(2))
	pin, err := nodes[0].pins.Pin(testCtx(t), "k")
	require.NoError(t, err)
	require.Equal(t, nodes[0].name(), pin.Owner)
	failed := nodes[0].c.LastFailure()
	require.False(t, failed.IsZero(), "the claim returned before failure detection: the test proves nothing")
	claimed := time.UnixMilli(int64(pin.Token >> 16))
	assert.False(t, claimed.Before(failed.Add(DefaultOwnerLease-10*time.Millisecond)),
		"claimed at %v, %v after the failure", claimed.Format("15:04:05.000"), claimed.Sub(failed))
}

// TestPinWaitsForTheClaimUnderWay: a Pin on a node whose own claim of the
// key is still being confirmed waits for that claim. Before, it found
// the claim's binding in this node's copy and answered at once with this
// node and the claim's token. Here that claim waits for a member that is
// cut off, is withdrawn when the member is declared failed, and is made
// again with a new token: the two callers were told two different pins.
// (At the heal of a cut the same early answer named this node while the
// members named an older claim elsewhere.)
func TestPinWaitsForTheClaimUnderWay(t *testing.T) {
	nodes := startPins(t, 3)
	tc := nodes[0].tc
	tc.Net.Partition(tc.Hosts(0, 2), tc.Hosts(1))
	n := nodes[2]
	type result struct {
		pin Pin
		err error
	}
	first := make(chan result, 1)
	go func() {
		p, err := n.pins.Pin(testCtx(t), "k")
		first <- result{p, err}
	}()
	require.Eventually(t, func() bool {
		p, err := n.pins.Owner("k")
		return err == nil && p.Owner == n.name()
	}, clustertest.Timeout, time.Millisecond, "the first claim never showed in its node's copy")
	second, err := n.pins.Pin(testCtx(t), "k")
	require.NoError(t, err)
	var r result
	select {
	case r = <-first:
	case <-time.After(clustertest.Timeout):
		t.Fatal("the first Pin did not return")
	}
	require.NoError(t, r.err)
	require.Equal(t, r.pin, second, "two Pins of one key on one node were told different pins")
	require.Equal(t, n.name(), second.Owner)
}

// TestPinGivenUpLeavesNoBinding: a Pin whose context ends while its
// claim waits for a member's answer leaves no binding behind. Before,
// the binding stayed in the node's copy once the confirmation settled
// (here when the cut-off member is declared failed), owned by nobody and
// never given up, and later Pins on the node were answered with it: at
// the heal of a cut, with an older token than the majority's claim.
func TestPinGivenUpLeavesNoBinding(t *testing.T) {
	nodes := startPins(t, 3)
	tc := nodes[0].tc
	tc.Net.Partition(tc.Hosts(0, 2), tc.Hosts(1))
	n := nodes[2]
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	_, err := n.pins.Pin(ctx, "k")
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool {
		_, ok := n.c.Member(nodes[1].name())
		return !ok
	}, clustertest.Timeout, 10*time.Millisecond, "node 1 was never declared failed")
	require.Eventually(t, func() bool {
		_, err := n.pins.Owner("k")
		return errors.Is(err, ErrNotPinned)
	}, 2*time.Second, 10*time.Millisecond, "the abandoned claim's binding is still there")
	for _, m := range []*pinNode{nodes[0], n} {
		_, err := m.pins.Owner("k")
		require.ErrorIs(t, err, ErrNotPinned, "on %s", m.name())
	}
}
