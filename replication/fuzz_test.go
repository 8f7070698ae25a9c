package replication

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
)

// The keys of FuzzServe's fixtures, which its seeds name: a session the
// fuzzed node serves as primary (its secondary is the second node), one
// it backs as secondary (its primary is the second node), and one it
// remembers as invalidated.
var (
	fuzzPrimary   = fuzzKey(1)
	fuzzSecondary = fuzzKey(2)
	fuzzGone      = fuzzKey(3)
)

func fuzzKey(b byte) string {
	var raw [16]byte
	raw[0] = b
	return b32.EncodeToString(raw[:])
}

// Fuzz senders: sender%len(fuzzSenders) picks one; 1, 2 and the fuzzed
// node's own name are filled in at start; "" is no name, and "stranger"
// is not a member. A sender of 128 or more is served as the transport
// serves a request alone on its connection: TryHandleCall first.
var fuzzSenders = []string{"1", "2", "self", "", "stranger"}

// fuzzFixtures resets the three nodes' tables and gives node 0 its
// fixtures.
func fuzzFixtures(c *testCluster) {
	for _, n := range c.nodes {
		for _, e := range n.s.entries() {
			n.s.drop(e, "fuzz reset")
		}
		n.s.tomb.reset()
		n.s.moved.reset()
	}
	s, peer := c.nodes[0].s, c.nodes[1]
	attrs := attrsOf(map[string][]byte{"user": []byte("ana")})
	for _, st := range []state{
		{role: rolePrimary, epoch: 3, members: 3, version: 5, sent: 5, attrs: attrs, size: attrs.size(), primary: s.self, secondary: peer.c.Name()},
		{role: roleSecondary, epoch: 3, members: 3, version: 5, attrs: attrs, size: attrs.size(), primary: peer.c.Name(), primaryInc: peer.s.inc},
	} {
		key := fuzzPrimary
		if st.role == roleSecondary {
			key = fuzzSecondary
		}
		e := newEntry(key, s.now())
		s.publish(e, st)
		if _, err := s.insert(e); err != nil {
			panic(err)
		}
	}
	s.tomb.add(fuzzGone, s.tombTTL())
}

func (t *keyTable) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.until, t.order = nil, nil
}

// FuzzServe feeds the session request handler (HandleCall, TryHandleCall)
// every method of the protocol, with bodies grown from seeds that reach
// each method's work on a node that holds sessions in either role, from
// members, itself, no one and a stranger. Nothing may panic, and what a
// request leaves behind stays bounded: the table of peers holds members
// only, a request adds at most one copy per item it can carry and none
// beyond MaxSessionSize, the remembered keys stay within their bound,
// and an answer within the size of a session plus the request.
func FuzzServe(f *testing.F) {
	const maxSize = 4 << 10
	c := startSessions(f, 3, func(_ int, o *Options) {
		o.MaxSessionSize = maxSize
		o.LeaseTerm = 20 * time.Millisecond
		o.CallTimeout = 200 * time.Millisecond
	})
	s := c.nodes[0].s
	senders := append([]string(nil), fuzzSenders...)
	senders[0], senders[1], senders[2] = c.nodes[1].c.Name(), c.nodes[2].c.Name(), s.self
	srv := server{s}
	f.Fuzz(func(t *testing.T, method string, sender uint8, body []byte) {
		fuzzFixtures(c)
		from := senders[int(sender)%len(senders)]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var resp []byte
		served := false
		if sender >= 128 {
			resp, served, _ = srv.TryHandleCall(ctx, from, method, body)
		}
		if !served {
			resp, _ = srv.HandleCall(ctx, from, method, body)
		}

		require.LessOrEqual(t, len(resp), 2*len(body)+maxSize+1<<10, "answer size")
		s.pmu.Lock()
		for name := range s.pmu.peers {
			require.Contains(t, senders[:2], name, "the table of peers holds members only")
		}
		s.pmu.Unlock()
		entries := s.entries()
		require.LessOrEqual(t, len(entries), 2+len(body)/minApplySize+1, "copies a request can add")
		for _, e := range entries {
			require.LessOrEqual(t, e.state().size, maxSize, "a copy beyond MaxSessionSize")
		}
		for _, kt := range []*keyTable{&s.tomb, &s.moved} {
			kt.mu.Lock()
			n := len(kt.until)
			kt.mu.Unlock()
			require.LessOrEqual(t, n, maxKeyTable)
		}
	})
}

// TestWriteFuzzServeSeeds writes FuzzServe's seed corpus into
// testdata/fuzz/FuzzServe when TROUPE_WRITE_FUZZ_SEEDS=1: one request per
// method of the protocol, valid against the fixtures, and a few that are
// not. Run it again when a message changes.
func TestWriteFuzzServeSeeds(t *testing.T) {
	if os.Getenv("TROUPE_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set TROUPE_WRITE_FUZZ_SEEDS=1 to write the seeds of FuzzServe")
	}
	// The seeds name senders by index (see fuzzSenders): 0 is node-1,
	// the primary of fuzzSecondary and the secondary of fuzzPrimary; 1 is
	// node-2; node-0 is the node under test.
	const n1, n2 = "node-1", "node-2"
	enc := func(v any) []byte {
		b, err := wire.Marshal(v)
		require.NoError(t, err)
		return b
	}
	full := func(key string, size int) *applyReq {
		return &applyReq{Inc: 7, Key: key, Epoch: 4, Members: 3, Version: 1, Full: true,
			Set: attrsOf(map[string][]byte{"user": make([]byte, size)})}
	}
	change := &applyReq{Inc: 7, Key: fuzzSecondary, Epoch: 3, Members: 3, Base: 5, Version: 6,
		Set: attrsOf(map[string][]byte{"cart": []byte("book")}), Del: []string{"user"}}
	seeds := []struct {
		name, method string
		sender       uint8
		body         []byte
	}{
		{"apply-change", methodApply, 0, enc(change)},
		{"apply-change-inline", methodApply, 128, enc(change)},
		{"apply-full-new", methodApply, 1, enc(full(newKey(), 16))},
		{"apply-full-too-large", methodApply, 1, enc(full(newKey(), 8<<10))},
		{"apply-full-over-primary", methodApply, 0, enc(full(fuzzPrimary, 16))},
		{"apply-names-another", methodApply, 1, enc(&applyReq{From: n1, Inc: 7, Key: newKey(), Epoch: 1, Version: 1, Full: true})},
		{"apply-stranger", methodApply, 4, enc(full(newKey(), 16))},
		{"apply-gone", methodApply, 0, enc(full(fuzzGone, 16))},
		{"batch", methodBatch, 0, enc(batchReq{Items: []applyReq{*change, *full(newKey(), 16)}})},
		{"batch-inline", methodBatch, 128, enc(batchReq{From: n1, Items: []applyReq{*change}})},
		{"verify", methodVerify, 0, enc(verifyReq{Key: fuzzSecondary, Epoch: 3, Members: 3})},
		{"verify-stale", methodVerify, 1, enc(verifyReq{Key: fuzzPrimary, Epoch: 1, Members: 1})},
		{"touch", methodTouch, 0, enc(touchReq{From: n1, Keys: []string{fuzzSecondary, fuzzPrimary, "x"}})},
		{"touch-for-another", methodTouch, 1, enc(touchReq{From: n1, Keys: []string{fuzzSecondary}})},
		{"drop", methodDrop, 0, enc(dropReq{Key: fuzzSecondary, Epoch: 4, Members: 3, Primary: n1})},
		{"drop-gone", methodDrop, 1, enc(dropReq{Key: fuzzPrimary, Gone: true})},
		{"drop-for-another", methodDrop, 1, enc(dropReq{Key: fuzzSecondary, Epoch: 9, Primary: n1})},
		{"take-primary", methodTake, 1, enc(takeReq{Inc: 9, Key: fuzzPrimary})},
		{"take-secondary", methodTake, 1, enc(takeReq{Inc: 9, Key: fuzzSecondary, Unreachable: []string{n1}})},
		{"take-relayed", methodTake, 0, enc(takeReq{From: n2, Inc: 9, Key: fuzzPrimary})},
		{"take-relayed-stranger", methodTake, 0, enc(takeReq{From: "stranger", Inc: 9, Key: fuzzPrimary})},
		{"take-gone", methodTake, 1, enc(takeReq{Key: fuzzGone})},
		{"take-unknown", methodTake, 1, enc(takeReq{Key: newKey()})},
		{"resolve", methodResolve, 0, enc(resolveReq{Items: []rankWire{{Key: fuzzPrimary, Epoch: 9, Members: 3, Primary: n1}, {Key: fuzzSecondary, Epoch: 3}}})},
		{"confirm", methodConfirm, 0, enc(confirmReq{Items: []rankWire{{Key: fuzzPrimary, Epoch: 3}, {Key: fuzzGone}, {Key: newKey()}}})},
		{"invalidate", methodInvalidate, 1, enc(invalidateReq{Key: fuzzPrimary})},
		{"invalidate-secondary", methodInvalidate, 1, enc(invalidateReq{From: n2, Key: fuzzSecondary})},
		{"ping", methodPing, 4, nil},
		{"garbage", methodTake, 0, []byte("\xc1\x00garbage")},
		{"unknown-method", "nonsense", 0, enc(takeReq{Key: fuzzPrimary})},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzServe")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for _, sd := range seeds {
		data := fmt.Sprintf("go test fuzz v1\nstring(%q)\nbyte(%q)\n[]byte(%q)\n", sd.method, sd.sender, sd.body)
		require.NoError(t, os.WriteFile(filepath.Join(dir, sd.name), []byte(data), 0o644))
	}
}
